"""Submit jobs, kill -9 the server mid-job, restart it, and count what was lost (must be 0).

    python -m bench.jobs_durability [--jobs 50] [--kill-after 15] [--store sqlite|redis]

Starts a real ``bentoml serve`` of the demo model (SQLite jobs and local outputs; with
``--store redis``, Redis jobs and SeaweedFS S3 outputs), submits every job at once, SIGKILLs
the whole server once ``--kill-after`` jobs have succeeded and another is generating, restarts
it on the same job store and output directory, and waits for every job. A job is lost when it
is gone, never finishes, or succeeded without a downloadable output. Exits 1 if any job was
lost or failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # also runnable as ``python bench/jobs_durability.py``
    sys.path.insert(0, str(REPO_ROOT))

FINISHED = {"succeeded", "failed", "canceled"}


def import_demo(home: Path) -> str:
    """The demo model in the model store at ``home`` (imported if missing)."""
    os.environ["BENTOML_HOME"] = str(home)
    from stable_audio_bento.store.hub_cache import prepare_offline_hub

    prepare_offline_hub()
    import bentoml
    from bentoml.exceptions import NotFound

    from models import DEMO_RECIPE
    from stable_audio_bento.engine.importer import import_source

    try:
        return str(bentoml.models.get("stable-audio-demo:latest").tag)
    except NotFound:
        return str(import_source("demo", None, recipe_dir=DEMO_RECIPE))


def list_jobs(url: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{url}/jobs", params={"limit": 500}, timeout=30).json()["jobs"]
    return {job["id"]: job for job in listed if job["id"] in ids}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="jobs to submit (at most 500)")
    parser.add_argument("--kill-after", type=int, default=15, help="succeeded jobs before kill")
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps per job")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds of audio per job")
    parser.add_argument("--lease", type=float, default=5.0, help="job lease, seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after, seconds")
    parser.add_argument(
        "--bentoml-home", type=Path, default=None, help="model store to use (default: temporary)"
    )
    args = parser.parse_args()
    if not 0 < args.kill_after < args.jobs <= 500:
        parser.error("need 0 < --kill-after < --jobs <= 500")

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-jobs-")))
        home = args.bentoml_home or workdir / "bentoml"
        print(f"model: {import_demo(home)}", flush=True)

        from tests.servers import BentoServer, redis_server, seaweedfs_s3, start_bento

        env = {
            "BENTOML_HOME": str(home),
            "BENTOML_DO_NOT_TRACK": "True",
            "STABLE_AUDIO_OUTPUT_DIR": str(workdir / "outputs"),
            "STABLE_AUDIO_DEVICE": "cpu",
            "STABLE_AUDIO_API_KEYS": "",
            "STABLE_AUDIO_JOB_LEASE_SECONDS": str(args.lease),
            "STABLE_AUDIO_JOB_QUEUE_SIZE": str(max(64, args.jobs)),
        }
        if args.store == "redis":
            redis = stack.enter_context(redis_server())
            s3 = stack.enter_context(seaweedfs_s3("bench-jobs"))
            env |= {
                **s3.env(),
                "STABLE_AUDIO_JOB_STORE": "redis",
                "STABLE_AUDIO_REDIS_URL": redis.url,
                "STABLE_AUDIO_STORAGE_BUCKET": s3.bucket,
                "STABLE_AUDIO_STORAGE_ENDPOINT_URL": s3.endpoint_url,
            }
        log = workdir / "server.log"
        servers: list[BentoServer] = []
        stack.callback(lambda: [s.stop() for s in servers])

        def fail(message: str) -> int:
            print(f"error: {message}", file=sys.stderr)
            kept = Path(tempfile.gettempdir()) / "bench-jobs-server.log"
            shutil.copy(log, kept)
            print(f"server log: {kept}", file=sys.stderr)
            return 1

        started = time.monotonic()
        server = start_bento(env, log)
        servers.append(server)
        ready = time.monotonic()
        body = {"prompt": "rain on a tin roof", "duration": args.duration, "steps": args.steps}
        responses = [
            httpx.post(f"{server.url}/jobs", json=body, timeout=30) for _ in range(args.jobs)
        ]
        refused = sum(r.status_code != 202 for r in responses)
        ids = {r.json()["id"] for r in responses if r.status_code == 202}

        # Kill once enough jobs are done, while the next one runs.
        deadline = time.monotonic() + args.timeout
        while True:
            jobs = list_jobs(server.url, ids)
            states = Counter(job["status"] for job in jobs.values())
            if states["succeeded"] >= args.kill_after and states["running"]:
                break
            if states["queued"] == 0 or time.monotonic() > deadline:
                return fail(f"no job to kill mid-run: {dict(states)}")
            time.sleep(0.05)
        server.kill()
        killed_at = time.monotonic()
        at_kill = states

        server = start_bento(env, log)
        servers.append(server)
        downtime = time.monotonic() - killed_at

        while time.monotonic() < deadline:
            jobs = list_jobs(server.url, ids)
            if len(jobs) == len(ids) and all(job["status"] in FINISHED for job in jobs.values()):
                break
            time.sleep(0.25)
        wall = time.monotonic() - ready
        final = Counter(job["status"] for job in jobs.values())

        downloadable = 0
        for job in jobs.values():
            if job["status"] == "succeeded" and job["download_url"]:
                audio = httpx.get(job["download_url"], timeout=30)
                downloadable += audio.status_code == 200 and audio.content[:4] == b"RIFF"
        unfinished = sum(job["status"] not in FINISHED for job in jobs.values())
        lost = (len(ids) - len(jobs)) + unfinished + (final["succeeded"] - downloadable)
        rerun = sum(job["attempts"] > 1 for job in jobs.values())

        rows = [
            ("store / storage", f"{args.store} / {'s3' if args.store == 'redis' else 'local'}"),
            ("job", f"{args.duration:g} s of audio, {args.steps} steps, lease {args.lease:g} s"),
            ("submitted", args.jobs),
            ("accepted (202)", len(ids)),
            ("refused", refused),
            ("succeeded before the kill", at_kill["succeeded"]),
            ("running at the kill", at_kill["running"]),
            ("queued at the kill", at_kill["queued"]),
            ("succeeded", final["succeeded"]),
            ("failed", final["failed"]),
            ("canceled", final["canceled"]),
            ("lost", lost),
            ("run twice (attempts > 1)", rerun),
            ("outputs downloaded and checked", downloadable),
            ("server start (first)", f"{ready - started:.1f} s"),
            ("down: kill -9 to ready again", f"{downtime:.1f} s"),
            ("wall time: first submit to last job", f"{wall:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        print(f"\n| {'':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
        for name, value in rows:
            print(f"| {name:<{width}} | {value} |")
        if lost or final["failed"] or refused:
            return fail(f"{lost} lost, {final['failed']} failed, {refused} refused")
        return 0


if __name__ == "__main__":
    sys.exit(main())
