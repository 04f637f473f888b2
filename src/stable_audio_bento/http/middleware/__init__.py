"""The ASGI middleware around the routes: guard, errors, auth, limits, docs."""
