"""One command that checks a machine's GPU path before a study pays for GPUs: the core,
without Ray, on tiny Hub-shaped model folders (benchmarks/hub_shaped.py) - every method at each
precision a GPU trains in (auto, then fp16: what a T4 runs), zero-shot on the Qwen3-shaped
decoder, and the embedder - with each trial's measured peak memory beside the planner's estimate.

    python benchmarks/gpu_check.py                           # on the first CUDA GPU (a few minutes)
    python benchmarks/gpu_check.py --device cpu              # the same on CPU (what the tests run)
    python benchmarks/gpu_check.py --out $OUT/gpu_check.md   # the table and verdicts into a file too

It prints one PASS or FAIL line per criterion: the preflight (every package it needs, its version,
what is missing: before any work), the tiny matrix at each precision (on CUDA a QLoRA that cannot
run is a FAIL), the embedder, and the kind of peak memory recorded. Exit status 0 when all pass.

On the lent GPU machine (its own Python 3.12, no registry: ../.library/device/), carry the wheels
`bash benchmarks/gpu_wheelhouse.sh` fetched, with no editable install:

    pip install --no-index --no-deps --target /tmp/extra .gpu-wheels/*.whl
    PYTHONPATH=/tmp/extra:$PWD python3 benchmarks/gpu_check.py --out $OUT/gpu_check.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import random
import tempfile
import time
from pathlib import Path

# module -> distribution: what the check imports, sentisweep's pure-Python pieces included
NEEDED = {"torch": "torch", "transformers": "transformers", "peft": "peft", "accelerate": "accelerate",
          "safetensors": "safetensors", "tokenizers": "tokenizers", "huggingface_hub": "huggingface-hub",
          "sentencepiece": "sentencepiece", "bitsandbytes": "bitsandbytes", "pydantic": "pydantic",
          "yaml": "pyyaml", "numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow", "sklearn": "scikit-learn",
          "scipy": "scipy", "psutil": "psutil", "tabulate": "tabulate"}
METHODS = ["full", "head-only", {"name": "lora", "r": 8}, {"name": "dora", "r": 8}, "ia3", {"name": "qlora", "r": 8}]
WORDS = {1: ["great", "wonderful", "moving", "superb", "loved"], 0: ["awful", "boring", "dull", "terrible", "hated"]}
FILLER = ["the", "film", "plot", "actors", "story", "scene", "was", "and", "a", "movie", "ending", "music"]


def preflight() -> tuple[list[str], list[str]]:
    """(what was found with its version, what is missing), before anything imports it."""
    found, missing = [f"Python {platform.python_version()}"], []
    for module, dist in NEEDED.items():
        try:
            spec = importlib.util.find_spec(module)
        except ImportError:  # a package whose import machinery breaks counts as missing
            spec = None
        if spec is None:
            missing.append(dist)
        else:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
    return found, missing


def reviews(n: int, seed: int):
    """Texts whose label follows their sentiment words: enough for a tokenizer and a few steps."""
    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 40))] + [rng.choice(WORDS[i % 2])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": i % 2})
    return pd.DataFrame(rows)


def check(device: str, precision: str, work: Path, wanted: tuple[str, ...]) -> tuple[list[dict], dict[str, Path]]:
    """Every family x method at `precision` (auto: bf16 on a GPU with bf16 units, else fp16; fp32
    on CPU): its rows, and the model folders. A method that cannot run here is a row with its reason."""
    from hub_shaped import build_folders  # a sibling: `python benchmarks/gpu_check.py` puts benchmarks/ on the path

    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.run import run_trial

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    reviews(200, 1).to_parquet(data / "train.parquet")
    reviews(64, 2).to_parquet(data / "test.parquet")
    folders = build_folders(work / "models", reviews(400, 3)["text"].tolist(), families=list(wanted))
    rows = []
    for family, folder in folders.items():
        methods = METHODS + (["zero-shot"] if family == "qwen3" else [])
        for method in methods:
            name = method if isinstance(method, str) else method["name"]
            config = parse_trial_config({
                "model": str(folder), "method": method, "seed": 1,
                "output_dir": str(work / "trials" / f"{family}-{name}-{precision}"),
                "data": {"source": str(data), "train_size": 128, "eval_size": 32, "test_size": 64,
                         "cache_dir": str(work / "cache")},
                "training": {"max_steps": 6, "batch_size": 16, "eval_batch_size": 32, "max_length": 64,
                             "learning_rate": 1e-3, "precision": precision, "device": device}})
            result = run_trial(config, overwrite=True)
            rows.append({"model": family, "method": name, "status": result.status,
                         # CPU: what the trial added to the process (its RSS includes the libraries)
                         "precision": result.precision_mode or precision,
                         "peak MiB": _mib(result.memory_growth_bytes if device == "cpu" else result.peak_memory_bytes),
                         "kind": result.peak_memory_kind, "estimate MiB": _mib(result.memory_estimate_bytes),
                         "seconds": round((result.train_seconds or 0) + (result.eval_seconds or 0), 2),
                         "note": (result.error or "").splitlines()[0][:100] if result.error else ""})
    return rows, folders


def check_embedder(folders: dict[str, Path], device: str) -> dict:
    import numpy as np

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


def verdict(passed: bool, criterion: str, detail: str) -> str:
    """One criterion's line, printed as soon as it is decided."""
    line = f"{'PASS' if passed else 'FAIL'} {criterion}: {detail}"
    print(line, flush=True)
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--work", help="folder for the tiny models, data and trials (default: a temporary one)")
    p.add_argument("--families", default="bert,distilbert,roberta,deberta-v3,qwen3",
                   help="the Hub-shaped families to check (default all)")
    p.add_argument("--out", help="also write the table and the verdicts to this markdown file")
    args = p.parse_args(argv)
    found, missing = preflight()
    lines = [verdict(not missing, "preflight", "; ".join(found) + (f"; missing: {', '.join(missing)}" if missing
                                                                  else ""))]
    if missing:  # nothing else can be judged: say what to carry
        return _finish(lines, "", args.out)
    return _checks(args, lines)


def _checks(args, lines: list[str]) -> int:
    import pandas as pd
    import torch
    from hub_shaped import FAMILIES

    from sentisweep.trial.models import set_quiet

    if args.device == "cuda" and not torch.cuda.is_available():
        lines.append(verdict(False, "device", "--device cuda: no CUDA GPU is visible here "
                                              "(--device cpu checks the rest)"))
        return _finish(lines, "", args.out)
    wanted = tuple(args.families.split(","))
    unknown = sorted(set(wanted) - set(FAMILIES))
    if unknown:
        lines.append(verdict(False, "families", f"--families = {args.families!r}: {unknown} unknown; allowed: "
                                                f"{', '.join(FAMILIES)}"))
        return _finish(lines, "", args.out)
    set_quiet(True)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        for precision in (["auto", "fp16"] if args.device == "cuda" else ["auto"]):
            matrix, folders = check(args.device, precision, work, wanted)
            # on a GPU a skipped trial (QLoRA refused, say) is a trial a study could not run
            bad = ("failed", "skipped") if args.device == "cuda" else ("failed",)
            failed = [f"{r['model']} {r['method']} ({r['status']})" for r in matrix if r["status"] in bad]
            ok = sum(r["status"] == "ok" for r in matrix)
            lines.append(verdict(not failed, f"tiny matrix at {precision}", f"{ok} ok on {device_name}"
                                 + (f"; failed: {', '.join(failed)}" if failed else "")))
            rows += matrix
        if "qwen3" in folders:  # the embedder's check runs on the decoder (last-token pooling)
            rows.append(check_embedder(folders, args.device))
            lines.append(verdict(rows[-1]["status"] == "ok", "embedder", rows[-1]["note"]))
    table = pd.DataFrame(rows)
    expected = {"cuda_max_allocated"} if args.device == "cuda" else {"host_rss_peak", "host_rss_sampled"}
    kinds = set(table.loc[table["status"] == "ok", "kind"].dropna()) if "kind" in table else set()
    lines.append(verdict(bool(kinds) and kinds <= expected, "peak memory kind",
                         f"{sorted(kinds)} recorded, expected {sorted(expected)}"))
    text = table.astype(object).where(table.notna(), "").to_markdown(index=False)
    print(text, flush=True)
    return _finish(lines, text, args.out)


def _finish(lines: list[str], table: str, out: str | None) -> int:
    if out:
        Path(out).write_text(f"{table}\n\n" + "\n".join(lines) + "\n")
    return 0 if all(line.startswith("PASS") for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
