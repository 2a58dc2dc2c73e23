"""One command that checks a machine's GPU path before a study pays for GPUs: the core,
without Ray, on tiny Hub-shaped model folders (benchmarks/hub_shaped.py) - every method at the
GPU's precision (QLoRA where bitsandbytes imports), zero-shot on the Qwen3-shaped decoder, and
the embedder - with each trial's measured peak memory beside the planner's estimate.

    python benchmarks/gpu_check.py                  # on the first CUDA GPU (a few minutes)
    python benchmarks/gpu_check.py --device cpu     # the same on CPU (what the tests run)

Needs torch, transformers, peft, accelerate, pyarrow, pandas, scikit-learn and sentisweep's
pure-Python pieces; sentencepiece for the DeBERTa-v3 folder and bitsandbytes for QLoRA are
used when installed and reported as skipped otherwise. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hub_shaped import (  # a sibling: `python benchmarks/gpu_check.py` puts benchmarks/ on the path
    FAMILIES,
    build_folders,
)

from sentisweep import exit_codes
from sentisweep.config_load import parse_trial_config
from sentisweep.trial.run import run_trial

METHODS = ["full", "head-only", {"name": "lora", "r": 8}, {"name": "dora", "r": 8}, "ia3", {"name": "qlora", "r": 8}]
WORDS = {1: ["great", "wonderful", "moving", "superb", "loved"], 0: ["awful", "boring", "dull", "terrible", "hated"]}
FILLER = ["the", "film", "plot", "actors", "story", "scene", "was", "and", "a", "movie", "ending", "music"]


def reviews(n: int, seed: int) -> pd.DataFrame:
    """Texts whose label follows their sentiment words: enough for a tokenizer and a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 40))] + [rng.choice(WORDS[i % 2])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": i % 2})
    return pd.DataFrame(rows)


def check(device: str, work: Path, wanted: tuple[str, ...] = FAMILIES) -> list[dict]:
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    reviews(200, 1).to_parquet(data / "train.parquet")
    reviews(64, 2).to_parquet(data / "test.parquet")
    families = [f for f in wanted if f != "deberta-v3" or importlib.util.find_spec("sentencepiece")]
    folders = build_folders(work / "models", reviews(400, 3)["text"].tolist(), families=families)
    precision = "bf16" if device == "cuda" else "fp32"
    rows = [{"model": "tiny-deberta-v3", "method": "-", "status": "skipped", "note": "sentencepiece not installed"}
            ] if "deberta-v3" in wanted and "deberta-v3" not in families else []
    for family, folder in folders.items():
        methods = METHODS + (["zero-shot"] if family == "qwen3" else [])
        for method in methods:
            name = method if isinstance(method, str) else method["name"]
            if name == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
                rows.append({"model": family, "method": name, "status": "skipped",
                             "note": "bitsandbytes not installed"})
                continue
            config = parse_trial_config({
                "model": str(folder), "method": method, "seed": 1,
                "output_dir": str(work / "trials" / f"{family}-{name}"),
                "data": {"source": str(data), "train_size": 128, "eval_size": 32, "test_size": 64,
                         "cache_dir": str(work / "cache")},
                "training": {"max_steps": 6, "batch_size": 16, "eval_batch_size": 32, "max_length": 64,
                             "learning_rate": 1e-3, "precision": precision, "device": device}})
            result = run_trial(config, overwrite=True)
            rows.append({"model": family, "method": name, "status": result.status,
                         # CPU: what the trial added to the process (its RSS includes the libraries)
                         "precision": result.precision_mode,
                         "peak MiB": _mib(result.memory_growth_bytes if device == "cpu" else result.peak_memory_bytes),
                         "kind": result.peak_memory_kind, "estimate MiB": _mib(result.memory_estimate_bytes),
                         "seconds": round((result.train_seconds or 0) + (result.eval_seconds or 0), 2),
                         "note": (result.error or "").splitlines()[0][:100] if result.error else ""})
    if "qwen3" in folders:  # the embedder's check runs on the decoder (last-token pooling)
        rows.append(check_embedder(folders, device))
    return rows


def check_embedder(folders: dict[str, Path], device: str) -> dict:
    from sentisweep.probe.embeddings import Embedder

    start = time.perf_counter()
    try:
        embedder = Embedder(str(folders["qwen3"]), max_length=64, device=device)
        vectors = embedder.embed(reviews(64, 4)["text"].tolist())
        ok = vectors.shape == (64, embedder.dim) and bool(np.isfinite(vectors).all())
        note = f"{vectors.shape[0]} x {vectors.shape[1]}, {embedder.pooling} pooling"
    except Exception as err:  # a check reports, it does not stop
        ok, note = False, f"{type(err).__name__}: {err}"[:100]
    return {"model": "qwen3", "method": "embedder", "status": "ok" if ok else "failed",
            "seconds": round(time.perf_counter() - start, 2), "note": note}


def _mib(value) -> float | None:
    return None if value is None else round(value / 2**20, 1)


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--work", help="folder for the tiny models, data and trials (default: a temporary one)")
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"the Hub-shaped families to check (default all: {','.join(FAMILIES)})")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise exit_codes.BadInput("--device = 'cuda': no CUDA GPU is visible here (run with --device cpu to "
                                  "check the rest)")
    from sentisweep.trial.models import set_quiet

    set_quiet(True)
    with tempfile.TemporaryDirectory() as scratch:
        wanted = tuple(args.families.split(","))
        unknown = sorted(set(wanted) - set(FAMILIES))
        if unknown:
            raise exit_codes.BadInput(f"--families = {args.families!r}: {unknown} unknown; "
                                      f"allowed: {', '.join(FAMILIES)}")
        rows = pd.DataFrame(check(args.device, Path(args.work or scratch), wanted))
    expected_kinds = {"cuda_max_allocated"} if args.device == "cuda" else {"host_rss_peak", "host_rss_sampled"}
    trained = rows[rows["status"] == "ok"].dropna(subset=["kind"]) if "kind" in rows else rows.iloc[:0]
    wrong_kind = trained[~trained["kind"].isin(expected_kinds)]
    print(rows.astype(object).where(rows.notna(), "").to_markdown(index=False))
    failed = rows[rows["status"] == "failed"]
    print(f"\n{(rows['status'] == 'ok').sum()} ok, {len(failed)} failed, {(rows['status'] == 'skipped').sum()} skipped"
          f" on {args.device}" + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else ""))
    if len(wrong_kind):
        print(f"peak memory recorded as {sorted(set(wrong_kind['kind']))}, expected one of {sorted(expected_kinds)}")
    return exit_codes.FAILED if len(failed) or len(wrong_kind) else exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
