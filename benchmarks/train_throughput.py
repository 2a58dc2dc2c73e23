"""Training throughput: sentisweep's run_trial against the baseline published studies run.

Baseline, as notebooks do it: the Hugging Face Trainer on a dataset padded to max_length
(256), batch 16, no length grouping. Ours: `run_trial` on the same model, method, rows and
hyperparameters (each batch padded to its own longest row, in random order). Both run in this one
process, one after the other, so they share the machine's state. Prints samples/s of each,
the ratio, both test accuracies, and each one's model FLOPs utilisation (MFU) against this
machine's fp32 matmul peak measured at the start.

    python benchmarks/train_throughput.py                      # minilm-l6, full + lora, 2,000 rows
    python benchmarks/train_throughput.py --methods full --seeds 42,43,44
    python benchmarks/train_throughput.py --smoke-test         # tiny model, seconds (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.significance import compare, correctness
from sentisweep.config import DataConfig, MethodConfig, default_cache_dir
from sentisweep.config_load import parse_trial_config
from sentisweep.trial.data import load_task_data
from sentisweep.trial.methods import LoadOptions, build
from sentisweep.trial.models import (
    get_model_spec,
    set_quiet,
)
from sentisweep.trial.run import run_trial

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "imdb"


def matmul_peaks_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best of a few fp32 size^3 matmuls on torch's current threads, for each kernel torch
    has here: `torch.mm` (MKL's sgemm in the x86 wheels) and oneDNN on a packed weight (what
    sentisweep's embedder and Inductor use). They differ: MKL takes its AVX2 path on AMD
    processors (this machine: 216 vs 483 GFLOP/s, 2 threads)."""
    import torch

    from sentisweep.trial import onednn

    a, b = torch.randn(size, size), torch.randn(size, size)
    kernels = {"torch.mm": lambda: torch.mm(a, b)}
    if onednn.available():
        packed = onednn.PackedLinear(torch.nn.Linear(size, size, bias=False))
        kernels["oneDNN packed"] = lambda: packed(a)
    peaks = {}
    with torch.inference_mode():
        for name, kernel in kernels.items():
            kernel()  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                kernel()
                best = min(best, time.perf_counter() - start)
            peaks[name] = 2 * size**3 / best / 1e9
    return peaks


def report_peak(size: int) -> dict[str, float]:
    """Each kernel's fp32 matmul GFLOP/s, printed; this machine's peak is the largest."""
    import torch

    peaks = matmul_peaks_gflops(size)
    each = ", ".join(f"{name} {gflops:.0f}" for name, gflops in peaks.items())
    print(f"fp32 matmul peak on {torch.get_num_threads()} threads: {max(peaks.values()):.0f} GFLOP/s ({each})",
          flush=True)
    return peaks


def useful_flops(model, lengths: list[int], adapter: bool) -> float:
    """Model FLOPs of one training pass over sequences of these *real* lengths (padding is
    not useful work). Linear layers: 2 x params per token forward; backward 2x more for the
    input gradients, and for full fine-tuning 2x more for the weight gradients: 6N per token
    (full) or 4N (frozen body + small adapter). Attention scores and mixing: 2 matmuls of
    2 x L x d per token per layer forward, 3x that for forward + backward."""
    import torch

    config = model.config
    embedding_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    body_params = sum(p.numel() for p in model.parameters()) - embedding_params
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    hidden = getattr(config, "hidden_size", None) or config.dim
    tokens = float(sum(lengths))
    squares = float(sum(n * n for n in lengths))
    linear = (4 if adapter else 6) * body_params * tokens
    attention = 3 * 4 * layers * hidden * squares
    return linear + attention


def baseline_run(args, method: str, data, label_count: int) -> dict:
    """The notebook recipe: pad everything to max_length, plain Trainer, no grouping."""
    import datasets
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    spec = get_model_spec(args.model)
    # The model's own dropout everywhere, as the notebooks leave it.
    built = build(MethodConfig(name=method), spec, label_count, LoadOptions(args.cache_dir, attention_dropout=None))
    tok = built.tokenizer

    def encode(frame):
        enc = tok(list(frame["text"]), padding="max_length", truncation=True, max_length=args.max_length)
        return datasets.Dataset.from_dict({**enc, "labels": frame["label"].tolist()})

    train, test = encode(data.splits["train"]), encode(data.splits["test"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=built.model, train_dataset=train, args=TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
            num_train_epochs=args.epochs, max_steps=args.max_steps or -1, learning_rate=args.lr,
            eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed,
            use_cpu=True, logging_steps=50))
        trainer.remove_callback(PrinterCallback)  # keep the benchmark's output to its table
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        logits = trainer.predict(test).predictions
    samples = trainer.state.global_step * args.batch_size
    right = pd.Series((np.argmax(logits, axis=-1) == np.asarray(test["labels"])).astype(float),
                      index=data.splits["test"]["row_id"].to_numpy())
    return {"seconds": seconds, "samples": min(samples, len(train) * int(np.ceil(args.epochs))),
            "accuracy": float(right.mean()), "right": right, "model": built.model, "padding": None}


def ours_run(args, method: str, out: Path, overrides: dict) -> dict:
    config = parse_trial_config({
        "model": args.model, "method": method, "seed": args.seed, "output_dir": str(out),
        "data": {"source": str(args.data), "train_size": args.train_size, "eval_size": 64,
                 "test_size": args.test_size, "cache_dir": args.cache_dir},
        "training": {"epochs": args.epochs, "max_steps": args.max_steps, "learning_rate": args.lr,
                     "batch_size": args.batch_size, "max_length": args.max_length,
                     "eval_each_epoch": False, "keep_checkpoint": False, **overrides},
    })
    result = run_trial(config, overwrite=True)
    if result.status != "ok":
        raise RuntimeError(f"run_trial {method}: {result.status}: {result.error}")
    return {"seconds": result.train_seconds, "samples": round(result.train_samples_per_second * result.train_seconds),
            "accuracy": result.accuracy, "padding": result.padding_fraction,
            "right": correctness([pd.read_parquet(result.predictions_path)])}


def parse_variant(text: str) -> dict:
    """'attention_dropout=null' -> {'attention_dropout': None} (the value read as YAML)."""
    import yaml

    from sentisweep.config import YamlLoader

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--variant {text!r}: expected KEY=VALUE, a training setting such as attention_dropout=null")
    return {key.strip(): yaml.load(value, Loader=YamlLoader)}  # noqa: S506 (a SafeLoader)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data source (default: ../shared/data/imdb)")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--methods", default="full,lora")
    p.add_argument("--seeds", default="42", help="comma-separated; each seed runs baseline and ours")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                   help="one more run_trial run per seed with this training setting (repeatable): "
                        "attention_dropout=null reproduces the fused-attention measurement")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="default: 5e-5 full, 5e-4 adapters")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="default: as a trial config's data.cache_dir")
    p.add_argument("--json", help="also write the measurements here")
    p.add_argument("--smoke-test", action="store_true", help="tiny-bert, 48 rows, 3 steps: checks the script runs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke_test:
        args.model, args.train_size, args.test_size, args.max_length, args.max_steps = "tiny-bert", 48, 16, 64, 3
    seeds = [int(seed) for seed in args.seeds.split(",")]
    variants = [{}] + [parse_variant(v) for v in args.variant]
    set_quiet(True)

    from transformers import AutoTokenizer

    peak = max(report_peak(512 if args.smoke_test else 2048).values())
    data = load_task_data(DataConfig(source=str(args.data), train_size=args.train_size, eval_size=64,
                                     test_size=args.test_size))
    # Every run sees the same real tokens (each row truncated to max_length).
    tokenizer = AutoTokenizer.from_pretrained(get_model_spec(args.model).resolve_tokenizer())
    lengths = [len(ids) for ids in tokenizer(list(data.splits["train"]["text"]), truncation=True,
                                             max_length=args.max_length)["input_ids"]]
    rows = []
    for method in args.methods.split(","):
        for seed in seeds:
            lr = args.lr or (5e-5 if method == "full" else 5e-4)
            run_args = argparse.Namespace(**{**vars(args), "lr": lr, "seed": seed})
            print(f"[{method} seed {seed}] baseline: Trainer, pad to {args.max_length}, batch {args.batch_size} ...",
                  flush=True)
            base = baseline_run(run_args, method, data, len(data.label_names))
            runs = [("baseline", base)]
            for overrides in variants:
                name = ", ".join(["sentisweep"] + [f"{k}={v}" for k, v in overrides.items()])
                print(f"[{method} seed {seed}] {name} (run_trial) ...", flush=True)
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append((name, ours_run(run_args, method, Path(tmp) / "trial", overrides)))
            epochs_seen = base["samples"] / len(lengths)
            flops = useful_flops(base["model"], lengths, adapter=method != "full") * epochs_seen
            for name, run in runs:
                rows.append({"method": method, "seed": seed, "run": name, "seconds": run["seconds"],
                             "samples_per_second": run["samples"] / run["seconds"], "accuracy": run["accuracy"],
                             "mfu": flops / run["seconds"] / (peak * 1e9),
                             # keyed by (seed, row): pooled over seeds, still paired row by row
                             "right": run["right"].set_axis([f"{seed}:{i}" for i in run["right"].index]),
                             "padding": run["padding"] if run["padding"] is not None
                             else 1 - sum(lengths) / (len(lengths) * args.max_length)})
    print_tables(rows, peak)
    if args.json:
        rows = [{k: v for k, v in r.items() if k != "right"} for r in rows]
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "rows": rows, "args": vars(args)}, indent=2))
    return 0


def print_tables(rows: list[dict], peak: float) -> None:
    print()
    print(f"| method | seed | run | train s | samples/s | accuracy | padding | MFU (peak {peak:.0f} GFLOP/s) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {r['run']} | {r['seconds']:.1f} | {r['samples_per_second']:.2f} | "
              f"{r['accuracy']:.4f} | {r['padding']:.1%} | {r['mfu']:.1%} |")
    print()
    table = pd.DataFrame(rows)
    for (method, name), ours in table[table["run"] != "baseline"].groupby(["method", "run"], sort=False):
        base = table[(table["method"] == method) & (table["run"] == "baseline")].set_index("seed")
        ours = ours.set_index("seed")
        speedup = ours["samples_per_second"] / base["samples_per_second"]
        # Same test rows in every run, so the accuracy difference gets a paired 95% interval
        # (rows of all seeds pooled: each seed's pair of runs is one more sample of each row).
        paired = compare(name, pd.concat(list(ours["right"])), "baseline", pd.concat(list(base["right"])))
        print(f"{method}, {name}: {speedup.mean():.2f}x samples/s of the baseline (per seed "
              f"{', '.join(f'{x:.2f}' for x in speedup)}), accuracy {paired.difference:+.4f} over "
              f"{len(ours)} seed(s) (paired 95% CI [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}], paired p "
              f"{paired.p_value:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())
