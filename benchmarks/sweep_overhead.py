"""What Ray Tune costs on top of the trials themselves.

The same trials through `sweeps/ablation.py` (a process per trial, Ray started in the
command) and through a plain loop of `run_trial` in one fresh Python process, one trial
at a time in both, in one run: both wall times (each a whole command: interpreter,
imports, data, an empty cache of its own) and the overhead percentage. With
`--repeats 2` the runs go Ray, loop, loop, Ray, so a drift in this machine's speed
(a shared VM: +-5% from one minute to the next, measured) falls on both sides alike.
With `--cpus 1` both sides run as many trials at once as there are cores, 1 CPU each (as
the shipped CPU configs do): the sweep through Ray's scheduling, the loop through a pool
of as many plain Python processes (tokenizing first, as the sweep's driver does).
Then the Ray runs' trials phase by phase (`benchmarks/timeline.py`): Ray starting each
trial's worker, our imports in it, run_trial, and the command's own start and end.
Where a trial runs (a plain process, a Ray task, a Tune trainable) was measured by
`--placement-rounds`, retired: `git show d4cf24c:benchmarks/sweep_overhead.py`.
Tune's own cost per trial, and how it grows with the trials, was `sweep_scale.py`'s (retired:
benchmarks/README.md).

    python benchmarks/sweep_overhead.py                       # the smoke config's trials
    python benchmarks/sweep_overhead.py --config benchmarks/configs/minute_trials.yaml --repeats 2
    python benchmarks/sweep_overhead.py --config benchmarks/configs/minute_trials.yaml --repeats 2 --cpus 1
    python benchmarks/sweep_overhead.py --smoke-test          # 2 trials (run by the tests)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import timeline  # a sibling: `python benchmarks/sweep_overhead.py` puts benchmarks/ on the path
import yaml

from sentisweep.config import DataConfig, read_yaml
from sentisweep.config_load import load_config
from sentisweep.locations import pinned_data
from sentisweep.plan import PlannedTrial, expand
from sentisweep.storage import Store
from sentisweep.trial.models import set_quiet
from sentisweep.trial.run import run_trial
from sweeps.driver import pretokenize

ROOT = Path(__file__).resolve().parents[1]


def benchmark_config(config: Path, cpus: int, out: Path, limit: int | None, run: str, at_once: int = 1) -> Path:
    """The sweep config with every trial given `cpus` CPUs and Ray running `at_once` trials at
    a time (1: like the plain loop); optionally only the first `limit` seeds x methods.
    Each run gets its own empty cache: both tokenize once and read the source once."""
    raw = read_yaml(config)
    # Tune runs a trial in a folder of its own: a relative data source must be resolved here.
    data = raw.setdefault("data", {})
    data["source"] = pinned_data(DataConfig.model_validate(data)).source
    data["cache_dir"] = str(out / f"cache-{run}")
    raw["resources"] = {"cpus_per_trial": cpus, "max_concurrent": at_once}
    raw["name"] = "overhead"
    raw.pop("baselines", None)
    if limit:
        raw["models"], raw["seeds"] = raw["models"][:1], raw.get("seeds", [42])[:1]
        raw["methods"] = [m for m in raw["methods"] if (m if isinstance(m, str) else m["name"]) != "zero-shot"][:limit]
    path = out / f"overhead-{run}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def runnable_trials(config: str | Path, storage: str | Path, cpus: int) -> list[PlannedTrial]:
    """The config's trials that are not skipped, their TrialConfigs set to `cpus` torch threads."""
    planned = [trial for trial in expand(load_config(config, "sweep"), Store(str(storage)), "cpu")
               if trial.skip_reason is None]
    for trial in planned:
        trial.config.training.threads = cpus
    return planned


def plain_loop(config: Path, storage: Path, cpus: int, at_once: int = 1) -> None:
    """What a user would write instead of a sweep: run in a fresh process by `timed_loop`.
    With `at_once` > 1, a pool of that many worker processes, each running trials one after
    another (imports paid once per worker, not per trial); tokenized first, as the sweep does."""
    set_quiet(True)
    planned = runnable_trials(config, storage, cpus)
    trials = [trial.config for trial in planned]
    if at_once == 1:
        results = list(map(run_trial, trials))
    else:
        pretokenize(trials)
        with ProcessPoolExecutor(at_once, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=set_quiet, initargs=(True,)) as pool:
            results = list(pool.map(run_trial, trials))
    for result in results:
        assert result.status == "ok", result.error


def in_fresh_python(statement: str) -> str:
    """Run a statement in a new interpreter, with this module imported as `bench`: its stdout."""
    code = f"import sweep_overhead as bench; {statement}"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)})
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    return out.stdout


def timed_loop(config: Path, storage: Path, cpus: int, at_once: int) -> float:
    start = time.perf_counter()
    in_fresh_python(f"bench.plain_loop({str(config)!r}, {str(storage)!r}, {cpus}, {at_once})")
    return time.perf_counter() - start


def through_ray(config: Path, storage: Path, cpus: int, at_once: int) -> float:
    """The sweep itself; `cpus` and `at_once` are already in its config (`benchmark_config`).
    Its processes carry the timeline probe (`benchmarks/timeline.py`)."""
    env = timeline.probed_env({k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, storage)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "ablation.py"), "--config", str(config),
                          "--storage", str(storage)], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    return time.perf_counter() - start


def result_rows(storage: Path) -> pd.DataFrame:
    """The trials' result rows, which both runs write."""
    return pd.concat([pd.read_parquet(path) for path in storage.glob("overhead/trials/*/result.parquet")])


def trial_work_seconds(rows: pd.DataFrame) -> float:
    """The trials' own training + evaluation seconds: what a drift in this machine's speed
    changes, unlike process start-up and imports."""
    return float((rows["train_seconds"] + rows["eval_seconds"].fillna(0)).sum())


def run_names(at_once: int, cpus: int) -> dict[str, str]:
    """The table's names of the two runs: how many trials each runs at once."""
    if at_once == 1:
        return {"loop": "plain loop of run_trial (one fresh process)",
                "ray": "sweeps/ablation.py (Ray Tune, a process per trial)"}
    each = f"{at_once} at once, {cpus} CPU{'s' if cpus > 1 else ''} each"
    return {"loop": f"plain Python: a pool of {at_once} processes running run_trial, {each}",
            "ray": f"sweeps/ablation.py (Ray Tune, a process per trial), {each}"}


def report(seconds: dict[str, list[float]], outside: dict[str, list[float]], trials: int, repeats: int,
           names: dict[str, str], concurrent: bool) -> None:
    mean = {run: (sum(seconds[run]) / repeats, sum(outside[run]) / repeats) for run in ("loop", "ray")}
    print(f"| run (mean of {repeats}) | wall s | per trial s | outside training and evaluation s |\n"
          "| --- | ---: | ---: | ---: |")
    for run in ("loop", "ray"):
        # Trials that overlap have no "outside" time of their own to add up.
        rest = "-" if concurrent else f"{mean[run][1]:.1f}"
        print(f"| {names[run]} | {mean[run][0]:.1f} | {mean[run][0] / trials:.1f} | {rest} |")
    loop_seconds = mean["loop"][0]
    extra, extra_outside = (mean["ray"][i] - mean["loop"][i] for i in (0, 1))
    print(f"overhead: {100 * extra / loop_seconds:+.0f}% ({extra / trials:+.1f} s per trial)")
    if not concurrent:
        # Start-up, imports, scheduling and result handling only: the same trials' training on
        # a machine whose speed drifts between runs no longer counts.
        print(f"overhead outside the trials' training and evaluation: {100 * extra_outside / loop_seconds:+.0f}% "
              f"of the loop ({extra_outside / trials:+.1f} s per trial)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "sweeps" / "configs" / "smoke.yaml"))
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                   help="CPUs (and torch threads) per trial; fewer than the machine has runs as many "
                        "trials at once as fit, in both runs (default: all, one trial at a time)")
    p.add_argument("--repeats", type=int, default=1,
                   help="pairs of runs, in ABBA order (2 = Ray, loop, loop, Ray; 0 = skip)")
    p.add_argument("--smoke-test", action="store_true", help="2 trials: checks the script runs")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not 0 < args.cpus <= (os.cpu_count() or 1):
        p.error(f"--cpus {args.cpus}: between 1 and this machine's {os.cpu_count()} CPUs")
    at_once = (os.cpu_count() or 1) // args.cpus  # as many as fit, as a sweep schedules them
    concurrent = at_once > 1
    names = run_names(at_once, args.cpus)
    # ABBA order: Ray, loop, loop, Ray, ... (one pair for --repeats 1)
    order = [run for pair in range(args.repeats) for run in (("ray", "loop") if pair % 2 == 0 else ("loop", "ray"))]
    seconds: dict[str, list[float]] = {"ray": [], "loop": []}
    outside: dict[str, list[float]] = {"ray": [], "loop": []}  # wall minus the trials' own training + evaluation
    phases = []  # of the Ray runs' trials
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp)
        for index, run in enumerate(order):
            config = benchmark_config(Path(args.config), args.cpus, storage, 2 if args.smoke_test else None,
                                      f"{run}{index}", at_once)
            if index == 0:
                trials = len(runnable_trials(config, tmp, args.cpus))
                print(f"{trials} trials, {at_once} at a time, {args.cpus} CPU(s) each; runs: {', '.join(order)}",
                      flush=True)
            timed = through_ray if run == "ray" else timed_loop
            wall = timed(config, storage / f"{run}{index}", args.cpus, at_once)
            rows = result_rows(storage / f"{run}{index}")
            work = trial_work_seconds(rows)
            seconds[run].append(wall)
            outside[run].append(wall - work)
            if run == "ray":
                phases.append(timeline.trial_phases(timeline.events_file(storage / f"{run}{index}"), rows))
            overlapped = " (side by side: they add up)" if concurrent else ""
            print(f"  {run}: {wall:.1f} s; the trials' training and evaluation {work:.1f} s{overlapped}", flush=True)
        if order:
            report(seconds, outside, trials, args.repeats, names, concurrent)
            print(f"the Ray runs' {sum(map(len, phases))} trials, phase by phase:")
            timeline.print_phases(pd.concat(phases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
