"""Putting Stable Audio weights into the BentoML model store: ``python -m models --help``."""

from pathlib import Path

# Each family's demo recipe, in the folder named as its demo source ("demo", "demo-sa3").
RECIPES = Path(__file__).resolve().parent
DEMO_RECIPE = RECIPES / "demo"
# The Stable Audio 3 demo (diffusers components): ``python -m models import demo-sa3``.
DEMO_SA3_RECIPE = RECIPES / "demo-sa3"
