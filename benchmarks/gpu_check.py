"""One command that checks a machine's GPU path before a study pays for GPUs: the core,
without Ray. First tiny Hub-shaped model folders (benchmarks/hub_shaped.py): every method at each
precision a GPU trains in (auto, then fp16: what a T4 runs), zero-shot on the Qwen3-shaped
decoder, the embedder in full precision and in 4 bits, and predict from a trained checkpoint.
Then real-shaped models with random weights (benchmarks/real_shaped.py: DistilBERT, RoBERTa and
DeBERTa-v3 base fully, Qwen3-0.6B with LoRA, Qwen3-4B with QLoRA with and without gradient
checkpointing; then DeBERTa-v3 with QLoRA, RoBERTa with LoRA, Qwen3-0.6B with QLoRA), each in
its own process at batch 16 x 256 tokens: measured peak memory against the planner's estimate,
tokens per second, and the loss falling.

    python benchmarks/gpu_check.py                           # on the first CUDA GPU
    python benchmarks/gpu_check.py --device cpu              # the tiny part on CPU (what the tests run)
    python benchmarks/gpu_check.py --out $OUT/gpu_check.md   # the table and verdicts into a file too
    python benchmarks/gpu_check.py --real-shaped none        # the tiny part only

It prints one PASS or FAIL line per criterion as soon as it is decided (and appends it to --out,
so a run cut short keeps what it decided): the preflight (every package it needs, its version,
what is missing: before any work), the tiny matrix at each precision (on CUDA a QLoRA that cannot
run is a FAIL), the embedder at each precision, predict, the kind of peak memory recorded, then
per real-shaped case its memory (within 15%) and its loss. Exit status 0 when all pass.

On the lent GPU machine (its own Python 3.12, no registry: ../.library/device/), carry the wheels
`bash benchmarks/gpu_wheelhouse.sh` fetched, with no editable install:

    pip install --no-index --no-deps --target /tmp/extra .gpu-wheels/*.whl
    PYTHONPATH=/tmp/extra:$PWD python3 benchmarks/gpu_check.py --out $OUT/gpu_check.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from real_shaped import FILLER, WORDS  # a sibling: `python benchmarks/gpu_check.py` puts benchmarks/ on the path

# module -> distribution: what the check imports, sentisweep's pure-Python pieces included
NEEDED = {"torch": "torch", "transformers": "transformers", "peft": "peft", "accelerate": "accelerate",
          "safetensors": "safetensors", "tokenizers": "tokenizers", "huggingface_hub": "huggingface-hub",
          "sentencepiece": "sentencepiece", "bitsandbytes": "bitsandbytes", "pydantic": "pydantic",
          "yaml": "pyyaml", "numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow", "sklearn": "scikit-learn",
          "scipy": "scipy", "psutil": "psutil", "tabulate": "tabulate"}
METHODS = ["full", "head-only", {"name": "lora", "r": 8}, {"name": "dora", "r": 8}, "ia3", {"name": "qlora", "r": 8}]


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


def check_embedder(folders: dict[str, Path], family: str, device: str, quantize: str | None) -> dict:
    import numpy as np

    from sentisweep.probe.embeddings import Embedder

    start = time.perf_counter()
    try:
        embedder = Embedder(str(folders[family]), max_length=64, device=device, quantize=quantize)
        vectors = embedder.embed(reviews(64, 4)["text"].tolist())
        ok = vectors.shape == (64, embedder.dim) and bool(np.isfinite(vectors).all())
        note = f"{vectors.shape[0]} x {vectors.shape[1]}, {embedder.pooling} pooling"
    except Exception as err:  # a check reports, it does not stop
        ok, note = False, f"{type(err).__name__}: {err}"[:100]
    return {"model": family, "method": f"embedder {quantize or 'unquantized'}", "status": "ok" if ok else "failed",
            "seconds": round(time.perf_counter() - start, 2), "note": note}


def check_predict(checkpoint: Path, device: str) -> tuple[bool, str]:
    """A trained trial's checkpoint served on `device`: probabilities for new texts, on that device."""
    import numpy as np

    from sentisweep.predict import Classifier

    try:
        classifier = Classifier(checkpoint, device=device)
        probabilities = classifier.probabilities(reviews(48, 5)["text"].tolist())
        on = next(classifier.model.parameters()).device.type
        ok = (probabilities.shape == (48, 2) and bool(np.isfinite(probabilities).all())
              and bool(np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)) and on == device)
        return ok, f"{checkpoint.parent.name}: {probabilities.shape[0]} texts on {on}"
    except Exception as err:  # a check reports, it does not stop
        return False, f"{checkpoint.parent.name}: {type(err).__name__}: {err}"[:160]


def _mib(value) -> float | None:
    return None if value is None else round(value / 2**20, 1)


class Verdicts:
    """The PASS / FAIL lines: printed as each is decided, and appended to --out at once, so a run
    the device's time limit cuts short still leaves what it decided."""

    def __init__(self, out: str | None):
        self.lines: list[str] = []
        self.out = Path(out) if out else None
        if self.out:
            self.out.write_text("")

    def add(self, passed: bool, criterion: str, detail: str) -> None:
        line = f"{'PASS' if passed else 'FAIL'} {criterion}: {detail}"
        print(line, flush=True)
        self.lines.append(line)
        if self.out:
            with self.out.open("a") as out:
                out.write(line + "\n")

    def finish(self, tables: list[str]) -> int:
        """The tables above the verdicts, in --out; exit status 0 when every criterion passed. After
        the tables a last line says how many passed and names what failed (the verdicts scrolled
        by above them); a check stopped before any table ends on its one FAIL line."""
        for table in tables:
            print(table, flush=True)
        if self.out:
            self.out.write_text("\n\n".join(tables + ["\n".join(self.lines)]) + "\n")
        failed = [line.split(":")[0].removeprefix("FAIL ") for line in self.lines if not line.startswith("PASS")]
        if tables:
            print(f"gpu check: {len(self.lines) - len(failed)} of {len(self.lines)} criteria passed"
                  + (f"; failed: {', '.join(failed)}" if failed else "")
                  + (f"; tables and verdicts in {self.out}" if self.out else ""), flush=True)
        return 0 if self.lines and not failed else 1


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--work", help="folder for the models, data and trials (default: a temporary one)")
    p.add_argument("--families", default="bert,distilbert,roberta,deberta-v3,qwen3",
                   help="the Hub-shaped families of the tiny part (default all)")
    p.add_argument("--real-shaped", default="default",
                   help="the real-shaped cases, model:method[:checkpointing] comma-separated (registry names); "
                        "default: the nine of benchmarks/real_shaped.py on cuda, none on cpu; 'none' skips them")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps of each real-shaped case (default 30)")
    p.add_argument("--case-timeout", type=float, default=240, help="seconds one real-shaped case may take")
    p.add_argument("--out", help="also write the tables and the verdicts to this markdown file")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one real-shaped case in this process
    p.add_argument("--case-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:  # the child process of one real-shaped case
        from real_shaped import Case, run_case_here

        record = run_case_here(Case.parse(args.case), args.device, args.steps, Path(args.work))
        Path(args.case_out).write_text(json.dumps(record))
        return 0
    verdicts = Verdicts(args.out)
    found, missing = preflight()
    verdicts.add(not missing, "preflight", "; ".join(found) + (f"; missing: {', '.join(missing)}" if missing else ""))
    if missing:  # nothing else can be judged: say what to carry
        return verdicts.finish([])
    return _checks(args, verdicts)


def _checks(args, verdicts: Verdicts) -> int:
    import torch
    from hub_shaped import FAMILIES
    from real_shaped import CUDA_CASES, Case

    from sentisweep.trial.models import set_quiet

    if args.device == "cuda" and not torch.cuda.is_available():
        verdicts.add(False, "device", "--device cuda: no CUDA GPU is visible here (--device cpu checks the rest)")
        return verdicts.finish([])
    wanted = tuple(args.families.split(","))
    unknown = sorted(set(wanted) - set(FAMILIES))
    if unknown:
        verdicts.add(False, "families", f"--families = {args.families!r}: {unknown} unknown; allowed: "
                                        f"{', '.join(FAMILIES)}")
        return verdicts.finish([])
    if args.real_shaped == "default":
        cases = list(CUDA_CASES) if args.device == "cuda" else []
    else:
        cases = [] if args.real_shaped == "none" else [Case.parse(text) for text in args.real_shaped.split(",")]
    set_quiet(True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        tables = [_tiny_part(args.device, wanted, work, verdicts)]
        if cases:
            tables.append(_real_shaped_part(cases, args, work, verdicts))
    return verdicts.finish(tables)


def _tiny_part(device: str, wanted: tuple[str, ...], work: Path, verdicts: Verdicts) -> str:
    import pandas as pd
    import torch

    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    rows, folders = [], {}
    for precision in (["auto", "fp16"] if device == "cuda" else ["auto"]):
        matrix, folders = check(device, precision, work, wanted)
        # on a GPU a skipped trial (QLoRA refused, say) is a trial a study could not run
        bad = ("failed", "skipped") if device == "cuda" else ("failed",)
        failed = [f"{r['model']} {r['method']} ({r['status']})" for r in matrix if r["status"] in bad]
        ok = sum(r["status"] == "ok" for r in matrix)
        verdicts.add(not failed, f"tiny matrix at {precision}", f"{ok} ok on {device_name}"
                     + (f"; failed: {', '.join(failed)}" if failed else ""))
        rows += matrix
    # the embedder on the decoder (last-token pooling) and on DeBERTa-v3, whose 4-bit queries
    # need the autocast dtype (sentisweep/trial/methods/base.py)
    for family in [f for f in ("qwen3", "deberta-v3") if f in folders]:
        for quantize in (None, "4bit"):
            rows.append(check_embedder(folders, family, device, quantize))
            verdicts.add(rows[-1]["status"] == "ok", f"{family} {rows[-1]['method']}", rows[-1]["note"])
    # predict from trained checkpoints: Qwen3's QLoRA (merged into the full-precision base) and a LoRA
    trained = [("qwen3", "qlora")] + [(family, "lora") for family in folders]
    served = [c for c in (work / "trials" / f"{f}-{m}-auto" / "checkpoint" for f, m in trained) if c.is_dir()][:2]
    if not served:
        verdicts.add(False, "predict", "no trial of the tiny matrix kept a checkpoint to serve")
    for checkpoint in served:
        ok, detail = check_predict(checkpoint, device)
        verdicts.add(ok, "predict", detail)
    table = pd.DataFrame(rows)
    expected = {"cuda_max_allocated"} if device == "cuda" else {"host_rss_peak", "host_rss_sampled"}
    kinds = set(table.loc[table["status"] == "ok", "kind"].dropna()) if "kind" in table else set()
    verdicts.add(bool(kinds) and kinds <= expected, "peak memory kind",
                 f"{sorted(kinds)} recorded, expected {sorted(expected)}")
    return table.astype(object).where(table.notna(), "").to_markdown(index=False)


def _real_shaped_part(cases, args, work: Path, verdicts: Verdicts) -> str:
    """Each case in its own process; a memory and a loss verdict per case, and its table row."""
    import pandas as pd
    from real_shaped import loss_verdict, memory_verdict, run_case

    rows = []
    for case in cases:
        print(f"real-shaped: {case.label} ...", flush=True)
        record = run_case(case, args.device, args.steps, work, args.case_timeout)
        row = record.get("row", {})
        error = record.get("error") or row.get("error")
        if error or row.get("status") != "ok":
            verdicts.add(False, f"real-shaped {case.label}", f"{row.get('status', 'failed')}: {error}"[:300])
            rows.append({"case": case.label, "status": row.get("status", "failed"), "note": str(error)[:100]})
            continue
        # like for like: CUDA's allocator peak, or on CPU the live tensors' peak, against the allocator estimate
        measured = row["peak_memory_bytes"] if args.device == "cuda" else record["tensors_peak"]
        ok, detail = memory_verdict(measured, row["memory_estimate_bytes"])
        verdicts.add(ok, f"memory {case.label}", detail)
        ok, detail = loss_verdict(record["losses"])
        verdicts.add(ok, f"loss {case.label}", detail)
        rows.append({"case": case.label, "status": "ok", "precision": row["precision_mode"],
                     "peak MiB": _mib(measured), "reserved MiB": _mib(row.get("peak_memory_reserved_bytes")),
                     "estimate MiB": _mib(row["memory_estimate_bytes"]),
                     "tokens/s": round(row["train_tokens_per_second"]), "steps": row["train_steps"],
                     "train s": round(row["train_seconds"], 1), "build s": record["build_seconds"]})
    return pd.DataFrame(rows).astype(object).fillna("").to_markdown(index=False)


if __name__ == "__main__":
    raise SystemExit(main())
