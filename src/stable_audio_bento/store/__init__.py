"""The BentoML model store: entries, the catalog of names, the hub cache."""
