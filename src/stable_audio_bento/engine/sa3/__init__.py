"""Stable Audio 3: the diffusers engine, its importer, converter and demo recipe."""

from ..family import Family

# The store metadata's ``backend`` of this family's entries (a stored format: never renamed).
SA3_BACKEND = "diffusers-sa3"
FAMILY = Family(name="Stable Audio 3", backend=SA3_BACKEND, package=__name__, demo="demo-sa3")
