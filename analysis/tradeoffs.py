"""A multi-objective search's trade-offs: its trials' Pareto front over the search's objectives,
the front's hypervolume, and the cheapest trial within X points of the best validation accuracy.

Every objective is turned into one to minimise (accuracy negated) and scaled to [0, 1] over the
finished trials (0 the best seen, 1 the worst), so that bytes and seconds weigh alike. The
hypervolume is what the front dominates up to the reference point 1.1 in each objective: between
0 and 1.1^k for k objectives, larger is better, comparable between searches of the same objectives
only after the same scaling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentisweep.config import OBJECTIVES
from sentisweep.layout import RUN_CONFIG_FILE

REFERENCE = 1.1
COLUMN = {"val_accuracy": "best_val_accuracy"}  # an objective's column in the results rows


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Rows (minimised objectives) that no other row dominates (as good in all, better in one)."""
    keep = np.ones(len(points), dtype=bool)
    for i, point in enumerate(points):
        dominated = np.all(points <= point, axis=1) & np.any(points < point, axis=1)
        keep[i] = not dominated.any()
    return keep


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The volume dominated by `points` (minimised) and bounded by `reference`, by slicing along
    the last objective (exact; fine for the tens of trials a search has)."""
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    order = np.argsort(points[:, -1])
    points, volume = points[order], 0.0
    for i, point in enumerate(points):
        upper = points[i + 1, -1] if i + 1 < len(points) else reference[-1]
        if upper > point[-1]:  # the slab between this point's last objective and the next one's
            volume += hypervolume(points[: i + 1, :-1], reference[:-1]) * (upper - point[-1])
    return volume


def objective_matrix(rows: pd.DataFrame, objectives: list[str]) -> np.ndarray:
    """The rows' objectives, minimised and scaled to [0, 1] over the rows."""
    raw = np.column_stack([rows[COLUMN.get(o, o)].to_numpy(float) * (-1 if OBJECTIVES[o] == "max" else 1)
                           for o in objectives])
    low, high = raw.min(axis=0), raw.max(axis=0)
    return (raw - low) / np.where(high > low, high - low, 1.0)


def search_objectives(store) -> list[str] | None:
    """The objectives of the search whose store this is (its run_config.json), or None."""
    if store is None or not store.is_file(RUN_CONFIG_FILE):
        return None
    return store.read_json(RUN_CONFIG_FILE).get("objectives")


def tradeoffs(results: pd.DataFrame, objectives: list[str], within_points: float) -> dict:
    """The front, its hypervolume, and the cheapest trial within `within_points` of the best."""
    rows = results[results["status"] == "ok"].dropna(subset=[COLUMN.get(o, o) for o in objectives])
    rows = rows.reset_index(drop=True)
    if len(rows) < 2:
        return {}
    points = objective_matrix(rows, objectives)
    front = pareto_mask(points)
    costs = [o for o in objectives if OBJECTIVES[o] == "min"]
    best = rows["best_val_accuracy"].max()
    near = rows[rows["best_val_accuracy"] >= best - within_points / 100 - 1e-12]
    cheapest = near.sort_values(costs).iloc[0] if costs else near.iloc[0]
    return {"rows": rows, "front": front,
            "hypervolume": hypervolume(points[front], np.full(len(objectives), REFERENCE)),
            "costs": costs, "cheapest": cheapest, "best": best}


def describe(found: dict, objectives: list[str], within_points: float) -> tuple[str, pd.DataFrame]:
    """The report's text (the front's hypervolume, the cheapest near the best) and the front's trials."""
    rows, front, cheapest = found["rows"], found["front"], found["cheapest"]
    columns = ["trial_id", "learning_rate", "lora_r", *[COLUMN.get(o, o) for o in objectives], "accuracy"]
    table = rows.loc[front, [c for c in dict.fromkeys(columns) if c in rows]].sort_values(
        found["costs"][0] if found["costs"] else "best_val_accuracy")
    costs = ", ".join(f"{c} {cheapest[c]:.4g}" for c in found["costs"])
    text = [f"Objectives: {', '.join(f'{o} ({OBJECTIVES[o]})' for o in objectives)}. "
            f"{int(front.sum())} of {len(rows)} finished trials are on the Pareto front; its hypervolume is "
            f"{found['hypervolume']:.4f} (objectives scaled to [0, 1] over the trials, reference point "
            f"{REFERENCE} each, at most {REFERENCE ** len(objectives):.3f}).",
            f"The cheapest trial within {within_points:g} points of the best validation accuracy "
            f"({found['best']:.4f}): **{cheapest['trial_id']}**, validation accuracy "
            f"{cheapest['best_val_accuracy']:.4f}" + (f", {costs}" if costs else "") + "."]
    return "\n\n".join(text), table
