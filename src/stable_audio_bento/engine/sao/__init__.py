"""Stable Audio Open: the stable-audio-tools engine, its importer and demo recipe."""
