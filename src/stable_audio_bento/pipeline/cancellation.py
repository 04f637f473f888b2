"""Work whose client has gone: a token the HTTP edge cancels, that queued work listens to.

The HTTP layer puts a ``CancelToken`` in the request's context (``current_token``) and cancels
it when the client disconnects; context variables follow the request into the worker thread
that runs a sync route (anyio copies them), so the coalescer sees the token without every
signature in between carrying it. A request still queued for a batch then leaves the queue
(its slot goes to the next request); one already generating finishes with its batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar

log = logging.getLogger(__name__)


class CancelToken:
    """Set once; callbacks registered before or after run exactly once (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a cancel callback failed")

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback`` when cancelled (now, if already); returns an unregister function."""
        with self._lock:
            if not self.cancelled:
                self._callbacks.append(callback)

                def remove() -> None:
                    with self._lock:
                        if callback in self._callbacks:
                            self._callbacks.remove(callback)

                return remove
        callback()
        return lambda: None


current_token: ContextVar[CancelToken | None] = ContextVar("stable_audio_cancel", default=None)
