"""What a sweep shows: the trial matrix of its dry run (`matrix_table`), and the last screen of a
sweep or a search: what the user needs when a long command ends, after
about a thousand lines of Ray Tune's progress. Each tuning cell's choice or why it failed, the
results table and the counts by status, where the rows are, the next command, and last of all
every warning the user must act on (issue 35: a tuning that found nothing once showed only
inside Tune's output, and the sweep exited 0 with untuned numbers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sentisweep.config import Resources, short
from sentisweep.results import STATUSES
from sentisweep.storage import is_remote
from sentisweep.trial.methods import get_method
from sentisweep.tuning import cell_key

if TYPE_CHECKING:
    from sentisweep.plan import PlannedTrial


def summary_table(results: pd.DataFrame) -> str:
    """Per model x method variant: the ok trials' mean test accuracy over seeds, and their cost."""
    ok = results[results["status"] == "ok"]
    lines = []
    if len(ok):
        lines += ["| model | method | learning rate | seeds | test accuracy mean | min | max | train s | "
                  "peak MiB | trainable % |", "|---|---|---|---|---|---|---|---|---|---|"]
        for (model, variant), group in ok.groupby(["model", "variant"]):
            untuned = " (UNTUNED)" if (group["tuning"] == "untuned").any() else ""
            rates = ", ".join(f"{r:.2e}" for r in sorted(group["learning_rate"].dropna().unique()))
            lines.append(f"| {model} | {variant}{untuned} | {rates or '-'} | {len(group)} | "
                         f"{group['accuracy'].mean():.4f} | {group['accuracy'].min():.4f} | "
                         f"{group['accuracy'].max():.4f} | {group['train_seconds'].mean():.1f} | "
                         f"{group['peak_memory_bytes'].mean() / 2**20:.0f} | {group['trainable_percent'].mean():.2f} |")
    lines.append(status_counts(results))
    for _, row in results[results["status"] == "failed"].iterrows():
        lines.append(f"  failed {row['trial_id']}: {str(row['error']).splitlines()[0][:300]}")
    return "\n".join(lines)


def status_counts(results: pd.DataFrame) -> str:
    counts = results["status"].value_counts().to_dict()
    return f"{len(results)} trial{'s' * (len(results) != 1)}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)


def shown(location: str) -> str:
    """A location as the user would type it here: relative to this directory when inside it."""
    if is_remote(location):
        return location
    try:
        return os.path.relpath(location) if Path(location).resolve().is_relative_to(Path.cwd()) else location
    except ValueError:
        return location


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def report_command(root: str, *beside: str) -> str:
    """The command that reports on the results store at `root` (and those `beside` it, in one
    report), as the user would type it here."""
    where = shown(root)
    return f"python -m analysis report {' '.join([where, *map(shown, beside)])} --out reports/{Path(where).name}"


def final_screen(title: str, results: pd.DataFrame, root: str, table: str, seconds: float,
                 sections: list[str] = (), warnings: list[str] = ()) -> str:
    """The closing lines: `title` and time, `sections` (e.g. each tuning cell's choice), the
    results table, where the rows are and how to read them, the next command, then `warnings`."""
    where = shown(root)
    lines = ["", "=" * 100, f"{title}: finished in {elapsed(seconds)}", *sections, "", summary_table(results), "",
             f"rows: {shown(table)} ({len(results)} rows), in pandas: "
             f"from sentisweep.results import read_results; read_results({where!r})",
             f"next: {report_command(root)}"]
    if warnings:
        lines += ["", *[f"WARNING: {w}" for w in warnings]]
    return "\n".join(lines)


def matrix_table(planned: list[PlannedTrial], resources: Resources, baselines: list[str] = (),
                 tuned: dict[str, dict] | None = None, finished: set[str] = frozenset()) -> str:
    """The trial matrix as a Markdown table (the --dry-run output), with each trial's memory estimate.
    `tuned`: cell key (sentisweep.tuning.cell_key) -> search space of the cells equal-budget tuning will set;
    `finished`: the trial ids a resumed sweep will not run again (sentisweep.results.finished_earlier)."""
    rows = ["| # | trial | model | method | seed | lr | resources | memory (est.) | status |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, trial in enumerate(planned, 1):
        c = trial.config
        res = f"{resources.cpus_per_trial:g} CPU" + (f", {trial.gpus:g} GPU" if trial.gpus else "")
        memory = f"{trial.memory.total / 2**30:.2f} GiB" if trial.memory else "-"
        status = f"skip: {trial.skip_reason}" if trial.skip_reason else "run"
        if c.trial_id in finished:
            status = "done (an earlier run)"
        params = " ".join(f"{k}={short(v)}" for k, v in sorted(c.method.params().items()))
        space = (tuned or {}).get(cell_key(c.model, c.variant))
        lr = f"{c.training.learning_rate:g}" if get_method(c.method.name).trains else "-"
        if space is not None and not trial.skip_reason:
            lr = "tuned: " + ", ".join(f"{k} {list(v)}" for k, v in space.items())
        rows.append(f"| {i} | {c.trial_id} | {c.model} | {c.method.name} {params} | {c.seed} | "
                    f"{lr} | {res} | {memory} | {status} |")
    runnable = sum(t.skip_reason is None for t in planned)
    earlier = f", {len(finished)} finished earlier" if finished else ""
    skipped = len(planned) - runnable
    rows.append(f"\n{len(planned)} trials: {runnable - len(finished)} to run{earlier}, {skipped} skipped")
    if baselines:
        rows.append(f"plus baselines on the same splits: {', '.join(baselines)}")
    return "\n".join(rows)
