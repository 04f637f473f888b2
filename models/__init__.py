"""Putting Stable Audio weights into the BentoML model store: ``python -m models --help``."""

from pathlib import Path

DEMO_RECIPE = Path(__file__).resolve().parent / "demo"
