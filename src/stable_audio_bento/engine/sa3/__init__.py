"""Stable Audio 3: the diffusers engine, its importer, converter and demo recipe."""
