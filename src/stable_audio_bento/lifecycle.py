"""The server process and its supervisor: requeue jobs on SIGTERM, exit when orphaned.

BentoML starts each worker process in a session of its own, so a ``kill -9`` of the
supervisor's process group leaves the workers running, still holding the listening socket
and taking jobs beside a restarted server. ``exit_when_orphaned`` watches the parent: once it
is gone the worker requeues its running jobs and shuts down (SIGTERM to itself, the same path
as a normal stop), and leaves hard after ``grace`` seconds if that hangs.
``requeue_on_sigterm`` gives running jobs back to the queue the moment SIGTERM arrives, not
after the HTTP server has drained its connections.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

Hook = Callable[[], object]


def _run_in_thread(hook: Hook, name: str) -> threading.Thread:
    # Never in the signal handler itself: it interrupts the main thread anywhere, possibly
    # while that thread holds a lock the hook needs.
    def run() -> None:
        try:
            hook()
        except Exception:
            log.exception("%s failed", name)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def requeue_on_sigterm(hook: Hook) -> bool:
    """Run ``hook`` (in a thread) when SIGTERM arrives, then the handler that was there.

    Call it from the main thread after the HTTP server installed its handlers. Returns False
    (and changes nothing) where a handler cannot be installed.
    """
    try:
        previous: Any = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            _run_in_thread(hook, "sigterm-requeue")
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        log.warning("SIGTERM handler not installed: running jobs requeue when leases expire")
        return False
    return True


def exit_when_orphaned(
    hook: Hook, interval: float = 1.0, grace: float = 15.0, parent: int | None = None
) -> threading.Thread:
    """Watch the parent process; when it is gone, run ``hook``, SIGTERM this process, exit.

    A process whose parent dies is re-parented (to init or a subreaper), so ``getppid``
    changes: that is the signal, checked every ``interval`` seconds.
    """
    watched = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == watched:
            threading.Event().wait(interval)
        log.warning(
            "The supervisor (pid %d) is gone: requeueing running jobs and shutting down", watched
        )
        _run_in_thread(hook, "orphan-requeue").join(grace)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(grace)
        log.error("Shutdown took longer than %.0f s after the supervisor died: exiting", grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread
