"""Putting Stable Audio weights into the BentoML model store: ``python -m models --help``."""

from pathlib import Path

DEMO_RECIPE = Path(__file__).resolve().parent / "demo"
# The Stable Audio 3 demo (diffusers components): ``python -m models import demo-sa3``.
DEMO_SA3_RECIPE = Path(__file__).resolve().parent / "demo-sa3"
