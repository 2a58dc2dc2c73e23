"""The last screen of a sweep or a search: what the user needs when a long command ends, after
about a thousand lines of Ray Tune's progress. Each tuning cell's choice or why it failed, the
results table and the counts by status, where the rows are, the next command, and last of all
every warning the user must act on (issue 35: a tuning that found nothing once showed only
inside Tune's output, and the sweep exited 0 with untuned numbers)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from sentisweep.results import STATUSES
from sentisweep.storage import is_remote


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
    return "trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)


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


def final_screen(title: str, results: pd.DataFrame, root: str, table: str, seconds: float,
                 sections: list[str] = (), warnings: list[str] = ()) -> str:
    """The closing lines: `title` and time, `sections` (e.g. each tuning cell's choice), the
    results table, where the rows are and how to read them, the next command, then `warnings`."""
    where = shown(root)
    lines = ["", "=" * 100, f"{title}: finished in {elapsed(seconds)}", *sections, "", summary_table(results), "",
             f"rows: {shown(table)} ({len(results)} rows), in pandas: "
             f"from sentisweep.results import read_results; read_results({where!r})",
             f"next: python -m analysis report {where} --out reports/{Path(where).name}"]
    if warnings:
        lines += ["", *[f"WARNING: {w}" for w in warnings]]
    return "\n".join(lines)
