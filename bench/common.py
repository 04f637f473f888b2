"""What every benchmark section shares: the demo model store, timers, statistics, the machine."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def prepare_environment(bentoml_home: Path | None) -> Path:
    """A model store holding the demo (a fresh temporary one unless given); offline hub cache.

    Must run before anything imports bentoml or huggingface_hub.
    """
    from stable_audio_bento.store.hub_cache import prepare_offline_hub

    prepare_offline_hub()
    home = bentoml_home or Path(tempfile.mkdtemp(prefix="bench-bentoml-home-"))
    os.environ["BENTOML_HOME"] = str(home)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    return home


def demo_entry() -> Any:
    """The demo's store entry, imported from its recipe if the store does not have it yet."""
    import sys

    from stable_audio_bento.errors import ModelNotFoundError
    from stable_audio_bento.store.catalog import ModelCatalog

    try:
        return ModelCatalog.from_store().resolve("demo")
    except ModelNotFoundError:
        sys.path.insert(0, str(REPO_ROOT))
        from models import DEMO_RECIPE
        from stable_audio_bento.engine.importer import import_source

        with quiet():
            import_source("demo", None, recipe_dir=DEMO_RECIPE)
        return ModelCatalog.from_store().resolve("demo")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow what the stock paths print: every seed drawn, tqdm bars, import notices."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process (all its threads)


def timed(run: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def best(run: Callable[[], object], repeats: int) -> Timing:
    """The fastest of ``repeats`` runs: the least disturbed by other work on a shared machine."""
    timings = [timed(run) for _ in range(repeats)]
    return min(timings, key=lambda t: t.wall)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    if q <= 0:
        return min(values)
    if q >= 100:
        return max(values)
    return cuts[round(q) - 1]


def load_average() -> float:
    """The 1-minute load average: how much else wanted this machine's cores meanwhile."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (also readable as plain text)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
