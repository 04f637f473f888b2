"""A BentoML model server for Stability AI's Stable Audio text-to-audio models."""

__version__ = "0.1.0"
