"""A bounded load test: concurrent clients against ``bentoml serve`` of the demo for N seconds.

    python -m bench.load [--clients 8] [--seconds 30] [--label before] [--url URL] [--no-write]

Each client keeps one connection and cycles through a sync generation
(``POST /v1/audio/generate``, 1 s, 8 steps), a job submission (``POST /jobs``) and a job listing
(``GET /jobs``) until the time is up; then the accepted jobs get a bounded wait to finish.
Printed: throughput, p50 / p95 latency per route, status counts, how many 429 / 503 answers
carried ``Retry-After``, the server's resident memory (whole process tree) before and after, and
jobs accepted vs succeeded. ``--label`` names the row written into bench/RESULTS.md (between
the ``load`` markers, one row per label, so a "before" and an "after" run sit side by side).
Without ``--url`` a fresh server is started (and stopped) on a temporary output directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
HEADERS = [
    "label",
    "clients x s",
    "requests",
    "req/s",
    "sync p50 s",
    "sync p95 s",
    "jobs p50 ms",
    "list p50 ms",
    "statuses",
    "429/503 with Retry-After",
    "RSS MiB before/after",
    "jobs accepted/succeeded",
    "load",
]
SYNC_BODY = {"input": "rain on a tin roof", "audio_length": 1.0, "num_inference_steps": 8}
JOB_BODY = {"prompt": "distant thunder", "duration": 1.0, "steps": 8}


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its children, MiB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 2**20, 1)


class Tally:
    """What the clients saw, shared between their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"sync": [], "jobs": [], "list": []}
        self.statuses: Counter[int] = Counter()
        self.limited = 0  # 429 / 503 answers
        self.limited_with_retry_after = 0
        self.job_ids: list[str] = []
        self.errors: Counter[str] = Counter()

    def record(self, kind: str, seconds: float, response: Any) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code in (429, 503):
                self.limited += 1
                if response.headers.get("retry-after"):
                    self.limited_with_retry_after += 1
            if response.status_code < 300:
                self.latency[kind].append(seconds)
            if kind == "jobs" and response.status_code == 202:
                self.job_ids.append(response.json()["id"])


def client(url: str, headers: dict[str, str], deadline: float, tally: Tally) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
        step = 0
        while time.monotonic() < deadline:
            kind = ("sync", "jobs", "list")[step % 3]
            step += 1
            began = time.perf_counter()
            try:
                if kind == "sync":
                    response = http.post("/v1/audio/generate", json=SYNC_BODY)
                elif kind == "jobs":
                    response = http.post("/jobs", json=JOB_BODY)
                else:
                    response = http.get("/jobs", params={"limit": 50})
            except httpx.HTTPError as e:
                with tally.lock:
                    tally.errors[type(e).__name__] += 1
                continue
            tally.record(kind, time.perf_counter() - began, response)


def wait_for_jobs(url: str, headers: dict[str, str], ids: list[str], timeout: float) -> int:
    """How many of ``ids`` succeeded within ``timeout`` seconds."""
    import httpx

    pending, succeeded = set(ids), 0
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                response = http.get(f"/jobs/{job_id}")
                if response.status_code != 200:
                    pending.discard(job_id)
                    continue
                status = response.json()["status"]
                if status in ("succeeded", "failed", "canceled"):
                    pending.discard(job_id)
                    succeeded += status == "succeeded"
            if pending:
                time.sleep(0.5)
    return succeeded


def run(
    url: str, pid: int | None, clients: int, seconds: float, key: str | None, drain: float
) -> dict[str, Any]:
    from .common import load_average, percentile

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    rss_before = rss_mib(pid) if pid else None
    tally = Tally()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client, args=(url, headers, deadline, tally))
        for _ in range(clients)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    rss_after = rss_mib(pid) if pid else None
    succeeded = wait_for_jobs(url, headers, tally.job_ids, drain)

    def p(kind: str, q: float, scale: float = 1.0) -> float | None:
        values = tally.latency[kind]
        return round(percentile(values, q) * scale, 3) if values else None

    requests = sum(tally.statuses.values())
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": requests,
        "requests_per_second": round(requests / wall, 2),
        "sync_p50_s": p("sync", 50),
        "sync_p95_s": p("sync", 95),
        "jobs_p50_ms": p("jobs", 50, 1000),
        "list_p50_ms": p("list", 50, 1000),
        "statuses": dict(sorted(tally.statuses.items())),
        "transport_errors": dict(tally.errors),
        "limited": tally.limited,
        "limited_with_retry_after": tally.limited_with_retry_after,
        "rss_mib_before": rss_before,
        "rss_mib_after": rss_after,
        "jobs_accepted": len(tally.job_ids),
        "jobs_succeeded": succeeded,
        "load_average": load_average(),
    }


def row(label: str, r: dict[str, Any]) -> list[object]:
    statuses = " ".join(f"{code}:{n}" for code, n in r["statuses"].items())
    if r["transport_errors"]:
        statuses += " " + " ".join(f"{name}:{n}" for name, n in r["transport_errors"].items())
    return [
        label,
        f"{r['clients']} x {r['seconds']:g}",
        r["requests"],
        r["requests_per_second"],
        r["sync_p50_s"],
        r["sync_p95_s"],
        r["jobs_p50_ms"],
        r["list_p50_ms"],
        statuses,
        f"{r['limited_with_retry_after']}/{r['limited']}",
        f"{r['rss_mib_before']} / {r['rss_mib_after']}",
        f"{r['jobs_accepted']}/{r['jobs_succeeded']}",
        r["load_average"],
    ]


def update_markdown(path: Path, label: str, new_row: list[object]) -> None:
    """Put ``new_row`` in the table between the load markers, replacing a row of that label."""
    from .common import table

    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN not in text or END not in text:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    rows: list[list[object]] = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        known = cells[0] in (HEADERS[0], label) or cells[0].startswith("---")
        if len(cells) == len(HEADERS) and not known:
            rows.append(list(cells))
    rows.append(new_row)
    path.write_text(f"{head}{BEGIN}\n{table(HEADERS, rows)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (1-64)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long (1-300 s)")
    parser.add_argument("--label", default="run", help="the row's name in RESULTS.md")
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    parser.add_argument("--api-key", default=None, help="bearer key for --url")
    parser.add_argument("--drain", type=float, default=120.0, help="wait for jobs, seconds")
    parser.add_argument("--markdown", type=Path, default=Path(__file__).parent / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 300:
        parser.error("need 1 <= --clients <= 64 and 1 <= --seconds <= 300")

    from .common import prepare_environment, table

    with ExitStack() as stack:
        url, pid = args.url, None
        if url is None:
            prepare_environment(None)
            from .common import demo_entry

            demo_entry()
            from tests.servers import start_bento

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-load-")))
            env = {
                "BENTOML_HOME": os.environ["BENTOML_HOME"],
                "BENTOML_RESULT_STORE": str(workdir / "task_result.db"),
                "BENTOML_DO_NOT_TRACK": "True",
                "STABLE_AUDIO_OUTPUT_DIR": str(workdir / "outputs"),
                "STABLE_AUDIO_DEVICE": "cpu",
                "STABLE_AUDIO_API_KEYS": "",
            }
            server = start_bento(env, workdir / "server.log")
            stack.callback(server.stop)
            url, pid = server.url, server.process.pid
        results = run(url, pid, args.clients, args.seconds, args.api_key, args.drain)
    line = row(args.label, results)
    print(table(HEADERS, [line]))
    if not args.no_write:
        update_markdown(args.markdown, args.label, line)
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
