"""`python -m sentisweep.train ...`: one trial from the command line (`sentisweep.trial.run`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from sentisweep import exit_codes
from sentisweep.config import PLACEMENTS, TrainingConfig, TrialConfig, deep_merge
from sentisweep.config_load import load_config, parse_trial_config

EXIT_CODES = {"ok": exit_codes.OK, "failed": exit_codes.FAILED, "skipped": exit_codes.SKIPPED}

EPILOG = """\
examples:
  # LoRA on the offline MiniLM, 2,000 IMDb train rows (about 2 minutes on 2 CPU cores; the README's)
  python -m sentisweep.train --model minilm-l6 --method lora --data imdb --train-size 2000 --eval-size 500 \\
      --test-size 2000 --max-length 128 --epochs 1 --lr 5e-4 --out runs/minilm-lora

  # a YAML file holding only what differs from the defaults, plus overrides
  python -m sentisweep.train --config my_trial.yaml --seed 43 --out runs/seed43

exit status: 0 ok, 1 trial failed, 2 bad arguments or config, 3 trial skipped (cannot run here).
"""


def build_parser() -> argparse.ArgumentParser:
    from sentisweep.trial.methods import METHODS
    from sentisweep.trial.methods.base import format_rate
    from sentisweep.trial.models import MODELS

    p = argparse.ArgumentParser(
        prog="python -m sentisweep.train",
        description="Train and measure one trial (model x method x seed) and write its TrialResult "
                    "row (result.parquet), test predictions, loss history and checkpoint to --out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML trial config; the flags below override it")
    p.add_argument("--model", help=f"registry name, hub id or local folder ({', '.join(MODELS)})")
    p.add_argument("--method", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", dest="output_dir", help="output folder (refuses to overwrite a finished trial)")
    p.add_argument("--overwrite", action="store_true", help="replace the result already in --out")
    d = p.add_argument_group("data")
    d.add_argument("--data", dest="source",
                   help="hub dataset id, folder/file of parquet/csv/jsonl/json, or aclImdb folder")
    d.add_argument("--text-column")
    d.add_argument("--label-column")
    d.add_argument("--split", choices=["holdout", "reshuffle"])
    d.add_argument("--train-size", type=int)
    d.add_argument("--eval-size", type=int)
    d.add_argument("--test-size", type=int)
    d.add_argument("--cache-dir", help="tokenization and tiny-model cache (default $SENTISWEEP_CACHE_DIR, "
                                       "else ~/.cache/sentisweep)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=float)
    t.add_argument("--max-steps", type=int)
    default_rate = format_rate(TrainingConfig.model_fields["learning_rate"].default)
    rates = "; ".join(f"{name} {m.rate_range}" for name, m in METHODS.items() if m.learning_rates)
    t.add_argument("--lr", dest="learning_rate", type=float,
                   help=f"default {default_rate}; each method's usual range (what a sweep's tuning searches): {rates}")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--grad-accum", dest="gradient_accumulation", type=int)
    t.add_argument("--max-length", type=int)
    t.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"])
    t.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    m = p.add_argument_group("method parameters")
    m.add_argument("--r", type=int, help="LoRA / DoRA / QLoRA rank")
    m.add_argument("--alpha", type=float)
    m.add_argument("--dropout", type=float)
    m.add_argument("--placement", help=f"{' | '.join(PLACEMENTS)}, or comma-separated module names "
                                       "(query,value; one name: query,)")
    p.add_argument("--quiet", action="store_true", help="hide transformers' load reports and progress bars")
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    sections = {
        "data": ["source", "text_column", "label_column", "split", "train_size", "eval_size", "test_size", "cache_dir"],
        "training": ["epochs", "max_steps", "learning_rate", "batch_size", "gradient_accumulation",
                     "max_length", "precision", "threads"],
        "method": ["r", "alpha", "dropout", "placement"],
    }
    values = vars(args)
    out: dict[str, Any] = {k: values[k] for k in ("model", "seed", "output_dir") if values[k] is not None}
    for section, keys in sections.items():
        part = {k: values[k] for k in keys if values[k] is not None}
        if part:
            out[section] = part
    placement = out.get("method", {}).get("placement")
    if placement and "," in placement:  # module names, checked against the model's own
        out["method"]["placement"] = [s.strip() for s in placement.split(",") if s.strip()]
    if args.method:
        out = deep_merge(out, {"method": {"name": args.method}})
    return out


def summary(result) -> str:
    def fmt(value, spec=".4f"):
        return "-" if value is None else format(value, spec)

    why = f" ({result.error.splitlines()[0]})" if result.error else ""
    lines = [f"trial {result.trial_id}: {result.status}{why}"]
    if result.status == "ok":
        mem = result.peak_memory_bytes / 2**20 if result.peak_memory_bytes else None
        lines += [
            f"  test accuracy {fmt(result.accuracy)}  f1 {fmt(result.f1)}  roc_auc {fmt(result.roc_auc)}  "
            f"eval_loss {fmt(result.eval_loss)}  (n={result.test_rows})",
            f"  best validation accuracy {fmt(result.best_val_accuracy)} at epoch {fmt(result.best_epoch, '.2f')}",
            f"  train {fmt(result.train_seconds, '.1f')} s, {fmt(result.train_samples_per_second, '.1f')} samples/s, "
            f"{fmt(result.train_tokens_per_second, '.0f')} tokens/s, padding {fmt(result.padding_fraction, '.1%')}",
            f"  peak memory {fmt(mem, '.0f')} MiB ({result.peak_memory_kind}), trainable "
            f"{result.trainable_params:,} of {result.total_params:,} ({result.trainable_percent:.2f}%), "
            f"saved {fmt(result.adapter_bytes, ',')} bytes",
            f"  device {result.device} ({result.device_name}), {result.torch_threads} threads, {result.precision_mode}",
        ]
    lines.append(f"  written to {result.output_dir}/result.parquet")
    return "\n".join(lines)


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = overrides_from_args(args)
    config: TrialConfig = (load_config(args.config, "trial", overrides) if args.config
                           else parse_trial_config(overrides, source="command line"))
    from sentisweep.layout import RESULT_FILE
    from sentisweep.trial.data import check_source
    from sentisweep.trial.methods import METHODS
    from sentisweep.trial.run import run_trial

    out = Path(config.output_dir)
    problems = check_source(config.data)
    if out.exists() and not out.is_dir():
        problems.append(f"--out = {str(out)!r}: a file, not a folder")
    elif not args.overwrite and (out / RESULT_FILE).exists():
        problems.append(f"--out = {str(out)!r}: {RESULT_FILE} exists there; choose another --out or pass --overwrite")
    if problems:
        raise exit_codes.BadInput(*problems)
    print(f"trial {config.resolved_trial_id()}: model {config.model}, method {config.method.name}, "
          f"seed {config.seed}, data {config.data.source} -> {config.output_dir}", flush=True)
    rate_warning = METHODS[config.method.name].rate_warning(config.training.learning_rate)
    if rate_warning:  # now, so a user can stop it, and again on the last screen
        rate_warning += "; pass --lr in that range"
        print(f"WARNING: {rate_warning}", flush=True)
    try:
        result = run_trial(config, quiet=args.quiet, overwrite=args.overwrite)  # bad data: BadInput, nothing written
    except KeyboardInterrupt:
        print(f"\ninterrupted: nothing was written to {out} (what was there is as it was)", file=sys.stderr)
        return exit_codes.INTERRUPTED
    print(summary(result))
    if rate_warning:
        print(f"WARNING: {rate_warning}")
    return EXIT_CODES[result.status]


if __name__ == "__main__":
    raise SystemExit(main())
