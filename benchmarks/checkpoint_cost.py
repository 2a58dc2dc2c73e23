"""What `training.resumable` costs: seconds and bytes per checkpoint with the optimizer's and
scheduler's state (what a retried trial resumes from) against the model alone (what every
trial saves at each evaluation anyway), in the same process, for full fine-tuning and LoRA.

    python benchmarks/checkpoint_cost.py                 # MiniLM-L6 x full, LoRA (IMDb or its mirror)
    python benchmarks/checkpoint_cost.py --smoke-test    # tiny-bert x LoRA (the tests run it)

Each trial trains 12 steps of batch 16 at max_length 128 and saves at steps 4, 8 and 12. The
seconds are the Trainer's own save (evaluation to on_save), to local disk; a sweep then uploads
the folder to the trial's storage (object storage adds its transfer on top).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from sentisweep.config_load import parse_trial_config
from sentisweep.storage import dir_bytes
from sentisweep.trial.run import run_trial

ROOT = Path(__file__).resolve().parents[1]


class SaveTimer(TrainerCallback):
    """Times each save: the Trainer evaluates, then saves; on_save comes once the folder is written."""

    def __init__(self):
        self.seconds: list[float] = []
        self.bytes: list[int] = []
        self._evaluated = 0.0

    def on_evaluate(self, args, state, control, **kwargs):
        self._evaluated = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._evaluated)
        self.bytes.append(dir_bytes(Path(args.output_dir) / f"checkpoint-{state.global_step}"))


def measure(model: str, method: str, data: str, resumable: bool, work: Path) -> tuple[float, float, str]:
    config = parse_trial_config({
        "model": model, "method": method, "seed": 1, "output_dir": str(work / f"{model}-{method}-{resumable}"),
        "data": {"source": data, "train_size": 256, "eval_size": 32, "test_size": 32, "cache_dir": str(work / "cache")},
        "training": {"max_steps": 12, "eval_steps": 4, "batch_size": 16, "eval_batch_size": 32, "max_length": 128,
                     "resumable": resumable, "keep_checkpoint": False}})
    timer = SaveTimer()
    result = run_trial(config, callbacks=[timer])
    if result.status != "ok":
        raise RuntimeError(f"{model} {method}: {result.status}: {result.error}")
    # the first save also pays one-time costs (folders, safetensors' first write): the later ones
    steady = timer.seconds[1:] or timer.seconds
    return sum(steady) / len(steady), max(timer.bytes), f"{result.trainable_params:,}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="imdb", help="a data source (default: imdb, or its local mirror)")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    runs = [("tiny-bert", "lora")] if args.smoke_test else [("minilm-l6", "full"), ("minilm-l6", "lora")]
    if args.smoke_test and args.data == "imdb":
        args.data = str(ROOT / "data" / "tiny_reviews")
    print("| model | method | trainable | model only: s / MiB | resumable: s / MiB | bytes x | seconds x |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for model, method in runs:
            plain_s, plain_b, trainable = measure(model, method, args.data, False, Path(work))
            full_s, full_b, _ = measure(model, method, args.data, True, Path(work))
            print(f"| {model} | {method} | {trainable} | {plain_s:.3f} / {plain_b / 2**20:.1f} | "
                  f"{full_s:.3f} / {full_b / 2**20:.1f} | {full_b / plain_b:.2f} | {full_s / plain_s:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
