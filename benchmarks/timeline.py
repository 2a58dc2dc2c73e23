"""Where a sweep's seconds go, trial by trial: a probe that every Python process of the run
loads at start-up (a `sitecustomize` module on PYTHONPATH, which Ray's processes inherit from
the driver) appends (time, pid, event) lines: the interpreter starting, the first import of
`sweeps.trainable` (the trial's Tune trainable starting our code) and the process exiting. With the
result rows' `start_time` / `end_time` (run_trial's own, to the millisecond) and their training
and evaluation seconds, each trial's worker process splits into phases (`trial_phases`).

The probe costs a set lookup per import and a few short writes per process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

EVENTS_VARIABLE = "SENTISWEEP_TIMELINE"
PROBE = f'''# the timeline probe of benchmarks/timeline.py
import atexit, json, os, sys, time

def _event(name):
    with open(os.environ["{EVENTS_VARIABLE}"], "a") as events:
        events.write(json.dumps({{"time": time.time(), "pid": os.getpid(), "event": name}}) + "\\n")

class _FirstImport:
    watched = {{"sweeps.trainable"}}

    def find_spec(self, name, path=None, target=None):
        if name in self.watched:
            self.watched.discard(name)
            _event("import " + name)
        return None  # the import itself goes on as usual

if os.environ.get("{EVENTS_VARIABLE}"):
    _event("start")
    sys.meta_path.insert(0, _FirstImport())
    atexit.register(_event, "exit")
'''

# The phases of one trial, in order ("waiting": none for the trials that start before any ends),
# then the command's own before its first trial's worker and after its last trial.
PHASES = {
    "waiting": "from the last trial's end to this trial's worker process starting (Tune, Ray)",
    "worker": "worker start-up until our trainable runs (Ray's runtime-env re-exec, import ray and Tune)",
    "imports": "our trainable until run_trial starts (imports of torch, transformers, peft)",
    "around": "inside run_trial, besides training and evaluation (model, data, results)",
    "work": "training and evaluation",
    "exit": "from run_trial's end to the worker process exiting",
    "before_first": "a run: from the command's start to the first worker's (imports, data, Ray, Tune)",
    "after_last": "a run: from the last trial's end to the command's exit (results, Ray shut-down)",
}


def events_file(folder: Path) -> Path:
    """Where the probe of a run in `folder` writes its events."""
    return folder / "timeline-events.jsonl"


def probed_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` with the probe on PYTHONPATH, writing to `events_file(folder)`."""
    probe = folder / "timeline-probe"
    probe.mkdir(parents=True, exist_ok=True)
    (probe / "sitecustomize.py").write_text(PROBE)
    path = os.pathsep.join(p for p in (str(probe), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, EVENTS_VARIABLE: str(events_file(folder))}


def trial_phases(events: Path, results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial in the order they started, a column of seconds per phase (PHASES).
    The driver is the first process to import `sweeps.trainable`; every later one is a trial's
    worker, and the k-th worker to reach our code runs the k-th trial to start (each worker
    runs one trial; run after run, this order held). A run with a retried trial has a worker
    more than rows and is not split."""
    driver, workers = _processes(events)
    if len(workers) != len(results):
        raise ValueError(f"{len(workers)} trial worker processes for {len(results)} result rows")
    rows = results.assign(begin=pd.to_datetime(results["start_time"]).map(pd.Timestamp.timestamp),
                          end=pd.to_datetime(results["end_time"]).map(pd.Timestamp.timestamp))
    rows = rows.sort_values("begin").reset_index(drop=True)
    phases = []
    for trial, (_, worker) in zip(rows.itertuples(), workers.iterrows(), strict=True):
        work = trial.train_seconds + (0.0 if pd.isna(trial.eval_seconds) else trial.eval_seconds)
        ended_before = rows["end"][rows["end"] <= worker["start"]]
        phases.append({
            "trial_id": trial.trial_id,
            "waiting": worker["start"] - ended_before.max() if len(ended_before) else float("nan"),
            "worker": worker["import sweeps.trainable"] - worker["start"],
            "imports": trial.begin - worker["import sweeps.trainable"],
            "around": trial.end - trial.begin - work,
            "work": work,
            "exit": worker.get("exit", float("nan")) - trial.end,
        })
    return pd.DataFrame(phases).assign(
        # the command's own start-up and shut-down, once a run: on its first and last trial
        before_first=[workers.iloc[0]["start"] - driver["start"]] + [float("nan")] * (len(phases) - 1),
        after_last=[float("nan")] * (len(phases) - 1) + [driver.get("exit", float("nan")) - rows["end"].max()])


def _processes(events: Path) -> tuple[pd.Series, pd.DataFrame]:
    """The driver's events, and those of the trials' workers in the order they reached our code."""
    lines = pd.DataFrame([json.loads(line) for line in events.read_text().splitlines()])
    by_process = lines.pivot_table(index="pid", columns="event", values="time", aggfunc="min")
    # A worker started by Ray for a runtime environment re-executes itself: its first start counts.
    ours = by_process.dropna(subset=["import sweeps.trainable"]).sort_values("import sweeps.trainable")
    return ours.iloc[0], ours.iloc[1:]


def print_phases(phases: pd.DataFrame) -> None:
    """The mean of each phase over the trials (and over runs, if several are concatenated)."""
    print("| where a trial's worker process spends its time | mean s | min s | max s |\n| --- | ---: | ---: | ---: |")
    for phase, meaning in PHASES.items():
        seconds = phases[phase].dropna()
        if len(seconds):
            print(f"| {meaning} | {seconds.mean():.2f} | {seconds.min():.2f} | {seconds.max():.2f} |")
