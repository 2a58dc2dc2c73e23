"""A sweep of many no-op trials through `sweeps/ablation.py`'s own path: does its cost per trial
stay flat as trials grow? The driver, Tune, the trainable, the rows and the report are the real
ones; only `run_trial` is replaced, in each trial's worker, by one that writes the trial's row
at once (no model, no data), and the trainable reports no evaluations.

For N trials and, as the baseline in the same run, N/10: seconds of Tune per trial (Tuner.fit's
wall time / trials, Ray already up), the driver process's memory growth during the sweep (RSS
sampled every 0.2 s, against its RSS when Ray is up), seconds to gather the rows, and seconds of
`python -m analysis report` on the sweep. Each trial takes 0.5 CPU (4 at a time on 2 cores).

    python benchmarks/sweep_scale.py                  # 1,000 no-op trials on one node, and 100
    python benchmarks/sweep_scale.py --cluster        # on the simulated 2-node cluster (as root: namespaces)
    python benchmarks/sweep_scale.py --smoke-test     # 10 and 1 (the tests run it)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
# issue 39's targets: Tune's cost per trial, the driver's memory growth, rows + report
TARGETS = {"tune_s_per_trial": 0.5, "rss_growth_mb": 300, "rows_and_report_s": 60}


def sweep_config(folder: Path, trials: int) -> Path:
    config = {"kind": "sweep", "name": f"scale-{trials}", "models": ["tiny-bert"], "methods": ["full"],
              "seeds": list(range(1, trials + 1)),
              "data": {"source": str(ROOT / "data" / "tiny_reviews"), "cache_dir": str(folder / "cache")},
              "resources": {"cpus_per_trial": 0.5}}
    path = folder / f"scale-{trials}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def no_op_run_trial(config, annotate=None, **_):
    """In the worker, for run_trial: the trial's row, `ok`, written as run_trial writes it."""
    from sentisweep.layout import RESULT_FILE
    from sentisweep.results import now_iso, row_of, write_results

    result = row_of(config)
    result.status, result.accuracy, result.best_val_accuracy, result.end_time = "ok", 0.5, 0.5, now_iso()
    if annotate:
        annotate(result)
    write_results([result], Path(config.output_dir) / RESULT_FILE)
    return result


def no_op_ablation_trial(params, trials, store):
    """The trainable Tune runs in place of `sweeps.trainable.run_ablation_trial` (pickled by value
    from this script): the real one, with run_trial replaced and no evaluation reporter (it would
    import transformers, a real trial's cost and not this benchmark's)."""
    from sweeps import trainable

    trainable.run_trial = no_op_run_trial
    trainable.evaluation_reporter = lambda resumable: None
    trainable.run_ablation_trial(params, trials, store)


class PeakRss(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(), 0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.2)


def drive(config: str, storage: str) -> dict[str, float]:
    """Run in the driver's process: `sweeps/ablation.py --config config --storage storage`,
    timed phase by phase."""
    from sweeps import ablation, driver, trainable

    seen, rss = {}, PeakRss()
    trainable.run_ablation_trial = no_op_ablation_trial
    start_ray, fit, gather = driver.start_ray, driver.fit, ablation.gather_results

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seen[name] = time.perf_counter() - start
                if name == "ray_start_s":  # Ray up: the memory baseline
                    seen["rss_start"] = rss.process.memory_info().rss
                    rss.start()
        return wrapper

    driver.start_ray, driver.fit = timed("ray_start_s", start_ray), timed("fit_s", fit)
    ablation.gather_results = timed("gather_s", gather)
    status = ablation.main(["--config", config, "--storage", storage])
    rss.running = False
    seen.update(status=status, rss_growth_mb=(rss.peak - seen["rss_start"]) / 2**20)
    return seen


def timed_run(trials: int, work: Path, cluster=None) -> dict[str, float]:
    """A driver of `trials` no-op trials in a process of its own (on the cluster's head, results
    in its S3), then the report of its results; its figures."""
    config = sweep_config(work, trials)
    storage = "s3://scale/results" if cluster else str(work / "results")
    argv = [sys.executable, __file__, "--drive", str(config), "--storage", storage]
    if cluster:
        done = cluster.run_on_head(argv, timeout=3600, cwd=ROOT)
    else:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=work)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    if seen["status"] != 0:
        raise RuntimeError(f"the sweep exited {seen['status']}: {done.stdout[-3000:]}")
    start = time.perf_counter()
    report = subprocess.run([sys.executable, "-m", "analysis", "report", f"{storage}/scale-{trials}",
                             "--out", str(work / "report")], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(cluster.env if cluster else {})})
    if report.returncode != 0:
        raise RuntimeError(report.stdout[-3000:] + report.stderr[-3000:])
    seen["report_s"] = time.perf_counter() - start
    return seen


def on_cluster(work: Path):
    from simcluster import SimulatedCluster  # a sibling: `python benchmarks/x.py` puts benchmarks/ on the path

    cluster = SimulatedCluster(work)
    cluster.start_s3("scale")
    cluster.start_head()
    cluster.add_worker("w1", cpus=1, gpus=0)
    cluster.add_worker("w2", cpus=1, gpus=0)
    return cluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000, help="no-op trials (the baseline runs a tenth)")
    p.add_argument("--cluster", action="store_true", help="on the simulated cluster: a head, 2 workers of 1 CPU")
    p.add_argument("--smoke-test", action="store_true", help="10 trials and 1")
    p.add_argument("--drive", help=argparse.SUPPRESS)  # the driver process of one run
    p.add_argument("--storage", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.drive:
        print(json.dumps(drive(args.drive, args.storage)))
        return 0
    trials = 10 if args.smoke_test else args.trials
    print("| trials | Tune s a trial | driver RSS growth MB | gather rows s | analysis report s |\n"
          "| ---: | ---: | ---: | ---: | ---: |")
    figures = {}
    for count in (max(1, trials // 10), trials):
        with tempfile.TemporaryDirectory() as tmp:
            cluster = on_cluster(Path(tmp)) if args.cluster else None
            try:
                seen = timed_run(count, Path(tmp), cluster)
            finally:
                if cluster:
                    cluster.stop()
        figures[count] = seen
        print(f"| {count} | {seen['fit_s'] / count:.3f} | {seen['rss_growth_mb']:.0f} | {seen['gather_s']:.1f} | "
              f"{seen['report_s']:.1f} |", flush=True)
    baseline, big = min(figures), figures[trials]
    growth = (big["fit_s"] / trials) / (figures[baseline]["fit_s"] / baseline)
    print(f"Tune s a trial at {trials} vs at {baseline}: {growth:.2f}x; "
          f"where ray started in {big['ray_start_s']:.1f} s (not counted)")
    checks = {"tune_s_per_trial": big["fit_s"] / trials, "rss_growth_mb": big["rss_growth_mb"],
              "rows_and_report_s": big["gather_s"] + big["report_s"]}
    for name, value in checks.items():
        print(f"{name}: {value:.2f} (target <= {TARGETS[name]}: {'met' if value <= TARGETS[name] else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
