"""Our engine against the reference's generate(), end to end, on the released layout.

Runs in the project's environment after ``parity/build_e2e.py``. For each variant it imports
OUT_DIR/e2e/<variant>/hub through ``python -m models import`` (the local snapshot) and, for
the distilled variants (small, medium), also as its released hub id from the stand-in hub
(``tests/fake_hub.py``: the released file list, the T5Gemma subfolder gated), checks that both
imports give the same entry, loads it on the CPU in float32 and generates every case the
reference generated, with the reference's output level (``normalize="clamp"``: generate()
clamps to [-1, 1]). It records which SAME decode ran (SAME-S's chunks or SAME-L's
sliding-window band) and the decoder noise it applied.

Inpainting is compared before our splice (the server keeps the source outside the regions on
purpose; the reference returns the model's audio everywhere). A batched row checks that a
request in a batch gets what it gets alone.

Writes ``parity/e2e_results.json``; exit status 1 when a case is under MIN_SNR_DB.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "parity" / "e2e_results.json"
MIN_SNR_DB = 60.0
HUB_REPO = "stabilityai/stable-audio-3-small-sfx"
SUB = "t5gemma-b-b-ul2"


def snr_db(reference: np.ndarray, ours: np.ndarray) -> float:
    error = float(np.sum((reference.astype(np.float64) - ours) ** 2))
    power = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if error == 0 else 10 * math.log10(power / error)


def cli_import(args: list[str], home: Path, extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STABLE_AUDIO_"))}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1")
    env.update(extra_env)
    result = subprocess.run(
        [sys.executable, "-m", "models", "import", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        sys.exit(f"import {args} failed:\n{result.stderr}")
    return result.stdout.strip()


def entry_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "models" / name / version


def weights(entry: Path) -> dict[str, bytes]:
    return {
        p.relative_to(entry).as_posix(): p.read_bytes()
        for p in sorted(entry.rglob("*.safetensors"))
    }


def import_variant(
    variant_dir: Path, home: Path, name: str, via_hub: bool, hub_repo: str = HUB_REPO
) -> tuple[Path, dict]:
    import yaml

    from tests.fake_hub import FakeRepo, fake_hub

    hub = variant_dir / "hub"
    started = time.perf_counter()
    tag = cli_import([str(hub), "--name", name], home, {})
    seconds = time.perf_counter() - started
    entry = entry_dir(home, tag)
    record: dict[str, Any] = {"local_snapshot": tag, "local_import_s": round(seconds, 1)}
    if via_hub:
        repo = FakeRepo.from_dir(hub)
        repo.gated_folders = (SUB,)
        with fake_hub({hub_repo: repo}) as (endpoint, requests):
            hub_tag = cli_import(
                [hub_repo, "--name", f"{name}-hub"],
                home,
                {
                    "HF_HUB_OFFLINE": "0",
                    "HF_ENDPOINT": endpoint,
                    "HF_TOKEN": "hf_token_with_access",
                    "HF_HUB_CACHE": str(home.parent / "hf-cache"),
                },
            )
        same = weights(entry_dir(home, hub_tag)) == weights(entry)
        record.update(hub_id=hub_tag, hub_entry_equals_local=same, hub_requests=len(requests))
        if not same:
            sys.exit("the hub import and the local import differ")
    meta = yaml.safe_load((entry / "model.yaml").read_text())["metadata"]
    return entry, {**record, "metadata": meta}


def run_variant(variant_dir: Path, home: Path, via_hub: bool) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from stable_audio_bento.audio import set_level
    from stable_audio_bento.engine.contract import EngineRequest, LoadOptions
    from stable_audio_bento.engine.sa3 import same as sa3_same
    from stable_audio_bento.engine.sa3.engine import SA3Engine

    cases = json.loads((variant_dir / "cases.json").read_text())
    variant = cases["variant"]
    reference = load_file(str(variant_dir / "reference.safetensors"))
    hub_repo = cases.get("hub_repo", HUB_REPO)
    entry, imported = import_variant(variant_dir, home, f"parity-{variant}", via_hub, hub_repo)
    options = LoadOptions(device="cpu", half=False, dtype="float32", check=False)
    engine = SA3Engine.load(entry, variant, imported["metadata"], options)
    source = reference["source"].numpy()
    rows = []
    for case in cases["cases"]:
        request = EngineRequest(
            prompt=case["prompt"],
            seed=case["seed"],
            seconds_total=case["seconds"],
            # "" is no negative prompt (the reference's default; base entries default to the
            # model card's negative prompt otherwise).
            negative_prompt=case.get("negative_prompt", ""),
            padding_seconds=6.0,
            normalize="clamp",
        )
        if "init_noise_level" in case:
            level = case["init_noise_level"]
            request = _with(request, init_audio=source, init_noise_level=level)
        if "inpaint" in case:
            request = _with(request, init_audio=source, inpaint_regions=(tuple(case["inpaint"]),))
        sampling = engine.info.sampling(
            steps=case["steps"],
            cfg_scale=case.get("cfg_scale", 1.0),
            apg_scale=case.get("apg_scale"),
        )
        started = time.perf_counter()
        if "inpaint" in case:  # the model's audio, before our splice
            with torch.inference_mode():
                latents, streams = engine.sample_streams([request], sampling)
                raw = engine.decode(latents, request, streams[0])
            ours = set_level(raw, "clamp")
        else:
            (ours,) = engine.generate([request], sampling)
        elapsed = time.perf_counter() - started
        expected = reference[case["id"]].numpy()
        # generate() keeps int(seconds * rate) samples, we keep round(seconds * rate) (2.3 s is
        # 101429.99... samples in floating point): compare the samples both have.
        if abs(ours.shape[-1] - expected.shape[-1]) > 1 or ours.shape[0] != expected.shape[0]:
            sys.exit(f"{variant} {case['id']}: shape {ours.shape}, reference {expected.shape}")
        common = min(ours.shape[-1], expected.shape[-1])
        ours, expected = ours[:, :common], expected[:, :common]
        rows.append(
            {
                "variant": variant,
                "case": case["id"],
                "snr_db": round(snr_db(expected, ours), 1),
                "max_abs_diff": float(np.abs(expected - ours).max()),
                "reference_peak": float(np.abs(expected).max()),
                "seconds": round(elapsed, 2),
            }
        )
    # A request in a batch gets what it gets alone (and so the reference's audio).
    first = cases["cases"][0]
    alone = EngineRequest(
        first["prompt"],
        first["seed"],
        first["seconds"],
        negative_prompt="",
        padding_seconds=6.0,
        normalize="clamp",
    )
    other = _with(alone, prompt="a dog barking", seed=99, seconds_total=first["seconds"] + 0.05)
    assert engine.info.batch_key(alone) == engine.info.batch_key(other)
    sampling = engine.info.sampling(steps=first["steps"], cfg_scale=first.get("cfg_scale", 1.0))
    batched = engine.generate([other, alone], sampling)[1]
    expected = reference[first["id"]].numpy()
    common = min(batched.shape[-1], expected.shape[-1])
    batched, expected = batched[:, :common], expected[:, :common]
    rows.append(
        {
            "variant": variant,
            "case": first["id"] + " (2nd of a batch of 2)",
            "snr_db": round(snr_db(expected, batched), 1),
            "max_abs_diff": float(np.abs(expected - batched).max()),
            "reference_peak": float(np.abs(expected).max()),
            "seconds": None,
        }
    )
    # A control: the same request without the decoder's mask noise (one of the differences
    # this engine fixed) must be far from the reference, or the comparison proves nothing.
    engine.mask_noise, kept = 0.0, engine.mask_noise
    (control,) = engine.generate([alone], sampling)
    engine.mask_noise = kept
    control_snr = round(snr_db(expected, control[:, :common]), 1)
    if control_snr >= MIN_SNR_DB:
        sys.exit(
            f"{variant}: the control (no decoder noise) is {control_snr} dB from the reference"
        )
    return {
        "control_without_decoder_noise_snr_db": control_snr,
        "variant": variant,
        "hub_repo": hub_repo if via_hub else None,
        # Which decode ran: SAME-S's chunks (engine/sa3/same.py) or SAME-L's sliding-window
        # band (engine/sa3/decode.py), and the decoder noise it applied.
        "decode_path": "chunked" if sa3_same.uses_chunks(engine._parts().vae) else "band",
        "decoder_mask_noise": engine.mask_noise,
        "same_sin_gated_layers": cases.get("same_sin_gated_layers"),
        "import": {k: v for k, v in imported.items() if k != "metadata"},
        "rows": rows,
    }


def _with(request: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(request, **changes)


def main(out_dir: Path) -> None:
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "bentoml"
        for variant_dir in sorted((out_dir / "e2e").iterdir()):
            via_hub = variant_dir.name in ("small", "medium")
            results.append(run_variant(variant_dir, home, via_hub=via_hub))
    rows = [row for result in results for row in result["rows"]]
    RESULTS.write_text(json.dumps({"min_snr_db": MIN_SNR_DB, "results": results}, indent=2) + "\n")
    width = max(len(r["case"]) for r in rows)
    for row in rows:
        print(f"{row['variant']:<11} {row['case']:<{width}} {row['snr_db']:>7} dB")
    failed = [r for r in rows if r["snr_db"] < MIN_SNR_DB]
    if failed:
        sys.exit(f"{len(failed)} case(s) under {MIN_SNR_DB} dB")
    print(f"all {len(rows)} cases >= {MIN_SNR_DB} dB")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
