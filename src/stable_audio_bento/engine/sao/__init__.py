"""Stable Audio Open: the stable-audio-tools engine, its importer and demo recipe."""

from ..family import Family
from ..info import SAT_BACKEND

FAMILY = Family(name="Stable Audio Open", backend=SAT_BACKEND, package=__name__, demo="demo")
