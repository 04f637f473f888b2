"""The HTTP layer: the compatible routes, jobs, health, outputs and the web page.

A FastAPI app mounted on the BentoML service (BentoML's own API layer cannot give the documented
status codes and bodies). One router per concern; each route gets the server's ``Runtime``
through ``Depends`` (:mod:`.deps`). HTTP status codes are chosen in :mod:`.errors` only.
"""

from .app import create_app
from .errors import error_response, map_error
from .generate import audio_response

__all__ = ["audio_response", "create_app", "error_response", "map_error"]
