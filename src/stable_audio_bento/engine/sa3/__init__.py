"""Stable Audio 3: the diffusers engine, its importer, converter and demo recipe."""

from ..family import Family
from ..info import SA3_BACKEND

FAMILY = Family(name="Stable Audio 3", backend=SA3_BACKEND, package=__name__, demo="demo-sa3")
