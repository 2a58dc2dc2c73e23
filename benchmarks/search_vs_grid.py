"""The Optuna + ASHA search against the full grid it samples from, in one run: the best by
validation of each, its test accuracy, and the optimizer steps each spent.

    SENTISWEEP_DATA_MIRROR=$PWD/../shared/data python benchmarks/search_vs_grid.py   # MiniLM-L6, 1,000 IMDb rows
    python benchmarks/search_vs_grid.py --smoke-test                                    # tiny-bert, seconds a trial

The grid: LoRA (attention+FFN, alpha = 2r) at r in {4, 8, 16, 32} x 4 learning rates, one seed,
each trial a full epoch (`sweeps/ablation.py`). The search: `sweeps/search.py` over the same r and
the learning-rate range the grid spans (log-uniform), `--samples` trials, ASHA stopping weak
ones at the validation reports. Target (issue 26): within 0.5 points of the grid's best test
accuracy at <= 40% of its steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCALES = {
    "full": {"model": "minilm-l6", "ranks": [4, 8, 16, 32], "rates": [1e-4, 3e-4, 1e-3, 3e-3], "samples": 6,
             "data": {"source": "imdb", "train_size": 1000, "eval_size": 200, "test_size": 1000, "truncation": "tail"},
             "training": {"epochs": 1, "batch_size": 16, "max_length": 128}, "eval_steps": 16},
    "smoke": {"model": "tiny-bert", "ranks": [2, 4], "rates": [1e-3, 1e-2], "samples": 2,  # grid: 4 trials
              "data": {"source": str(ROOT / "data" / "tiny_reviews"), "train_size": 64,
                       "eval_size": 16, "test_size": 32},
              "training": {"max_steps": 8, "batch_size": 8, "eval_batch_size": 16, "max_length": 64},
              "eval_steps": 2},
}


def configs(scale: dict) -> tuple[dict, dict]:
    """The grid (a sweep config) and the search over the same values (a search config)."""
    lora = {"name": "lora", "placement": "attention+ffn", "dropout": 0.1}
    grid = {"name": "grid", "models": [scale["model"]], "seeds": [42], "data": scale["data"],
            "training": scale["training"], "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
            "methods": [{**lora, "r": r, "alpha": 2.0 * r, "label": f"lora-r{r}-lr{rate:g}",
                         "training": {"learning_rate": rate}} for r in scale["ranks"] for rate in scale["rates"]]}
    search = {"name": "search", "model": scale["model"], "method": "lora", "placement": "attention+ffn",
              "num_samples": scale["samples"], "seed": 42,
              "space": {"r": scale["ranks"], "alpha_multiple": [2.0], "dropout": [0.1, 0.1],
                        "learning_rate": [min(scale["rates"]), max(scale["rates"])]},
              # every trial is at validation 0.50 after 16 steps: ASHA judges from the second report (32)
              "scheduler": {"grace_period": 2, "reduction_factor": 2}, "data": scale["data"],
              "training": {**scale["training"], "eval_steps": scale["eval_steps"]},
              "resources": {"cpus_per_trial": 1, "max_concurrent": 2}}
    return grid, search


def run(script: str, config: dict, work: Path) -> pd.DataFrame:
    path = work / f"{config['name']}.yaml"
    path.write_text(f"# python {script} --config {path.name}\n" + yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    done = subprocess.run([sys.executable, str(ROOT / script), "--config", str(path), "--storage", str(work)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode not in (0, 1):  # 1: finished, some trial failed (its row says why)
        raise RuntimeError(f"{script} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return pd.read_parquet(work / config["name"] / "results.parquet")


def summary(name: str, rows: pd.DataFrame) -> dict:
    """The best finished trial by validation accuracy (never test), and what the whole run spent."""
    finished = rows[rows["status"] == "ok"]
    best = finished.loc[finished["best_val_accuracy"].idxmax()]
    return {"run": name, "trials": len(rows), "stopped early": int((rows["status"] == "stopped").sum()),
            "optimizer steps": int(rows["train_steps"].fillna(0).sum()),
            "best by validation": f"r {int(best['lora_r'])}, lr {best['learning_rate']:.2e}",
            "its val accuracy": round(float(best["best_val_accuracy"]), 4),
            "its test accuracy": round(float(best["accuracy"]), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke-test", action="store_true", help="tiny-bert on the fixture: the tests run it")
    p.add_argument("--samples", type=int, help="the search's trials (default: 6; smoke 2)")
    p.add_argument("--work", help="keep both runs' results here (default: a temporary folder)")
    args = p.parse_args(argv)
    scale = dict(SCALES["smoke" if args.smoke_test else "full"])
    if args.samples:
        scale["samples"] = args.samples
    grid_config, search_config = configs(scale)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        print(f"grid: {len(grid_config['methods'])} trials ...", flush=True)
        grid = summary("grid", run("sweeps/ablation.py", grid_config, work))
        print(f"search: {scale['samples']} trials ...", flush=True)
        search = summary("search (Optuna TPE + ASHA)", run("sweeps/search.py", search_config, work))
    table = pd.DataFrame([grid, search])
    print(table.to_markdown(index=False))
    steps = search["optimizer steps"] / grid["optimizer steps"]
    points = 100 * (search["its test accuracy"] - grid["its test accuracy"])
    print(f"\nsearch / grid optimizer steps: {steps:.2f} (target <= 0.40)")
    print(f"search - grid test accuracy of the best by validation: {points:+.1f} points (target >= -0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
