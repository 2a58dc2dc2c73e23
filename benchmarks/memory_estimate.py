"""The memory planner's estimate against what a trial adds to its process's host memory, on CPU.

    python benchmarks/memory_estimate.py                # MiniLM-L6 and tiny-bert x full, LoRA, QLoRA
    python benchmarks/memory_estimate.py --smoke-test   # tiny-bert x LoRA (the tests run it)

Each trial runs in a fresh Python process (a process's freed memory is reused by later trials
and would hide their growth): 6 steps of batch 16 at max_length 128, evaluation batch 16.
The estimate is a GPU figure (sentisweep/trial/memory.py); host RSS also holds the allocator's
arenas and the libraries' buffers, so this is a loose check of its shape, not of its bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAL = """
import json, sys
from sentisweep.plan import parse_trial_config
from sentisweep.trial.run import run_trial
model, method, data, work = sys.argv[1:]
config = parse_trial_config({"model": model, "method": method, "output_dir": work + "/trial",
    "data": {"source": data, "train_size": 256, "eval_size": 64, "test_size": 64, "cache_dir": work + "/cache"},
    "training": {"max_steps": 6, "batch_size": 16, "eval_batch_size": 16, "max_length": 128}})
result = run_trial(config, overwrite=True)
print(json.dumps([result.status, result.memory_growth_bytes, result.memory_estimate_bytes, result.error]))
"""


def measure(model: str, method: str, data: str) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run([sys.executable, "-c", TRIAL, model, method, data, work], capture_output=True, text=True,
                             cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise RuntimeError(out.stderr[-2000:])
    status, growth, estimate, error = json.loads(lines[-1])
    if status != "ok":
        raise RuntimeError(f"{model} {method}: {status}: {error}")
    return growth, estimate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="imdb", help="a data source (default: imdb, or its local mirror)")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    runs = ([("tiny-bert", "lora")] if args.smoke_test else
            [(model, method) for model in ("minilm-l6", "tiny-bert") for method in ("full", "lora", "qlora")])
    if args.smoke_test and args.data == "imdb":
        args.data = str(ROOT / "tests" / "fixtures" / "tiny_reviews")
    print("| model | method | host memory added MiB | estimate MiB | estimate / measured |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model, method in runs:
        growth, estimate = measure(model, method, args.data)
        print(f"| {model} | {method} | {growth / 2**20:.0f} | {estimate / 2**20:.0f} | {estimate / growth:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
