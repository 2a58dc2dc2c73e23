"""The memory planner's estimate against what a trial adds to its process's host memory, on CPU.

    python benchmarks/memory_estimate.py                # MiniLM-L6 and tiny-bert x full, LoRA, QLoRA
    python benchmarks/memory_estimate.py --smoke-test   # tiny-bert x LoRA at max_length 32 (the tests run it)
    python benchmarks/memory_estimate.py --models tiny-bert,tiny-deberta --methods full --max-length 512

Each trial runs in a fresh Python process (a process's freed memory is reused by later trials
and would hide their growth): 6 steps of batch 16 at max_length 128 (--max-length), evaluation batch 16.
Two measurements of the same trial:
    tensors   the peak of torch's live CPU tensor bytes (torch.profiler's memory events summed in
              time order): the quantity a GPU's max_memory_allocated reports, and the one the
              estimate (sentisweep/trial/memory.py) predicts. The ratio is taken against it.
    host RSS  what the process's peak RSS (the kernel's VmHWM) gained: it also holds glibc's
              freed-but-kept arenas and memory earlier steps freed and later ones reused, so it
              can lie above or below the tensors' peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAL = """
import json, sys
from real_shaped import tensors_peak_of  # benchmarks/ is on PYTHONPATH (run())
from sentisweep.config_load import parse_trial_config
from sentisweep.trial.run import run_trial
model, method, data, work, profiled, max_length = sys.argv[1:]
config = parse_trial_config({"model": model, "method": method, "output_dir": work + "/trial",
    "data": {"source": data, "train_size": 256, "eval_size": 64, "test_size": 64, "cache_dir": work + "/cache"},
    "training": {"max_steps": 6, "batch_size": 16, "eval_batch_size": 16, "max_length": int(max_length)}})
if profiled == "1":  # the profiler's own event buffers would inflate the RSS: RSS is read in a run without it
    result, peak = tensors_peak_of(lambda: run_trial(config, overwrite=True))
else:
    result, peak = run_trial(config, overwrite=True), 0
print(json.dumps([result.status, result.memory_growth_bytes, peak, result.memory_estimate_bytes, result.error]))
"""


def run(model: str, method: str, data: str, max_length: int, profiled: bool) -> tuple[int, int, int]:
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run([sys.executable, "-c", TRIAL, model, method, data, work, str(int(profiled)),
                              str(max_length)],
                             capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [str(ROOT / "benchmarks"), *filter(None, [os.environ.get("PYTHONPATH")])])})
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise RuntimeError(out.stderr[-2000:])
    status, growth, tensors, estimate, error = json.loads(lines[-1])
    if status != "ok":
        raise RuntimeError(f"{model} {method}: {status}: {error}")
    return growth, tensors, estimate


def measure(model: str, method: str, data: str, max_length: int) -> tuple[int, int, int]:
    """(host RSS added, tensors' peak, estimate): two runs of the same trial, the second profiled."""
    growth, _, estimate = run(model, method, data, max_length, profiled=False)
    _, tensors, _ = run(model, method, data, max_length, profiled=True)
    return growth, tensors, estimate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="imdb", help="a data source (default: imdb, or its local mirror)")
    p.add_argument("--models", default="minilm-l6,tiny-bert")
    p.add_argument("--methods", default="full,lora,qlora")
    p.add_argument("--max-length", type=int, default=128, help="IMDb reviews fill 512 tokens too")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    runs = ([("tiny-bert", "lora")] if args.smoke_test else
            [(model, method) for model in args.models.split(",") for method in args.methods.split(",")])
    # the estimate is for batches padded to max_length: the fixture's reviews (5-46 words) fill 32 tokens
    max_length = 32 if args.smoke_test else args.max_length
    if args.smoke_test and args.data == "imdb":
        args.data = str(ROOT / "data" / "tiny_reviews")
    print("| model | method | tensors' peak MiB | host RSS added MiB | estimate MiB | estimate / tensors' peak "
          "| estimate / RSS added |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model, method in runs:
        growth, tensors, estimate = measure(model, method, args.data, max_length)
        print(f"| {model} | {method} | {tensors / 2**20:.0f} | {growth / 2**20:.0f} | {estimate / 2**20:.0f} "
              f"| {estimate / tensors:.2f} | {estimate / growth:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
