"""The process lifecycle hooks with real processes: an orphan exits, SIGTERM runs the hook first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

# A child that starts a grandchild watching its parent, then exits at once (as a supervisor
# killed with -9 would): the grandchild must run its hook and be gone soon after.
ORPHAN = """
import subprocess, sys
grandchild = '''
import sys, threading
from pathlib import Path
from stable_audio_bento.lifecycle import exit_when_orphaned
marker = Path(sys.argv[1])
exit_when_orphaned(lambda: marker.write_text("requeued"), interval=0.1, grace=5)
print("watching", flush=True)
threading.Event().wait(60)
'''
process = subprocess.Popen([sys.executable, "-c", grandchild, sys.argv[1]],
                           stdout=subprocess.PIPE, start_new_session=True)
assert process.stdout.readline() == b"watching\\n"
print(process.pid, flush=True)
"""

SIGTERM = """
import signal, sys, threading, time
from pathlib import Path
from stable_audio_bento.lifecycle import requeue_on_sigterm
marker = Path(sys.argv[1])
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())  # the HTTP server's own handler
assert requeue_on_sigterm(lambda: marker.write_text("requeued"))
print("ready", flush=True)
done.wait(30)
time.sleep(0.2)
print("previous handler ran", flush=True)
"""


def test_an_orphan_runs_its_hook_and_exits(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(marker)], capture_output=True, timeout=60, check=True
    )
    orphan = psutil.Process(int(out.stdout))
    try:
        orphan.wait(timeout=10)
    finally:
        if orphan.is_running():
            orphan.kill()
    assert marker.read_text() == "requeued"


def test_sigterm_runs_the_hook_then_the_previous_handler(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM, str(marker)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    os.kill(process.pid, signal.SIGTERM)
    started = time.monotonic()
    assert process.stdout.readline() == "previous handler ran\n"
    assert process.wait(10) == 0
    assert marker.read_text() == "requeued"
    assert time.monotonic() - started < 5
