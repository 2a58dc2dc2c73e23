"""What a tuning budget bought: a tuned ablation's budget and each cell's choice, and the
expected best validation accuracy against the number of trials (Dodge et al. 2019, "Show Your
Work: Improved Reporting of Experimental Results"), from a tuned ablation's tuning trials or a
search's trials.

Expected maximum of n trials drawn (with replacement) from the N observed validation scores
v(1) <= ... <= v(N): E[max of n] = sum_i v(i) * ((i/N)^n - ((i-1)/N)^n). A method whose curve
still rises at the budget's end would gain from more trials; one that is flat has been tuned.
A trial ASHA stopped counts with the validation accuracy it had reached.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentisweep.storage import Store


def expected_max(scores, n_max: int | None = None) -> np.ndarray:
    """E[max of n draws] for n = 1 .. n_max (default: as many as there are scores)."""
    values = np.sort(np.asarray(scores, dtype=float))
    count = len(values)
    if count == 0:
        return np.array([])
    below = np.arange(count + 1) / count  # P(a draw <= v(i)) = i / N
    return np.array([float(np.sum(values * (below[1:] ** n - below[:-1] ** n)))
                     for n in range(1, (n_max or count) + 1)])


def expected_max_table(rows: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """One row per group and n: the expected best validation accuracy of n trials."""
    scored = rows[rows["status"].isin(["ok", "stopped"])].dropna(subset=["best_val_accuracy"])
    out = []
    for key, group in scored.groupby(groups):
        curve = expected_max(group["best_val_accuracy"])
        name = " / ".join(map(str, key if isinstance(key, tuple) else (key,)))
        out += [{"model / method": name, "trials": n, "expected best val accuracy": round(float(v), 4)}
                for n, v in enumerate(curve, 1)]
    return pd.DataFrame(out)


def store_of(location: str) -> Store | None:
    try:
        return Store(location)
    except ValueError:  # a results file, not a folder
        return None


def tuning_of(location: str) -> tuple[dict, pd.DataFrame] | None:
    """A tuned ablation's chosen.json and tuning rows, or None."""
    from sentisweep.layout import CHOSEN_FILE, RESULTS_TABLE, TUNING_FOLDER

    store = store_of(location)
    if store is None or not store.is_file(TUNING_FOLDER, CHOSEN_FILE):
        return None
    chosen = store.read_json(TUNING_FOLDER, CHOSEN_FILE)
    rows = (store.read_frame(TUNING_FOLDER, RESULTS_TABLE) if store.is_file(TUNING_FOLDER, RESULTS_TABLE)
            else pd.DataFrame(columns=["status", "best_val_accuracy", "model", "variant"]))
    return chosen, rows


def choices_table(chosen: dict) -> pd.DataFrame:
    """Each cell: what was searched, what was chosen, what it cost, and edge flags."""
    rows = []
    for cell in chosen["cells"].values():
        values = cell.get("values") or {}
        rows.append({
            "model / method": f"{cell['model']} / {cell['variant']}",
            "searched": "; ".join(f"{k} {v}" for k, v in cell["space"].items()),
            "chosen": "; ".join(f"{k} {v:.2e}" if k == "learning_rate" else f"{k} {v}" for k, v in values.items())
                      or cell.get("error", ""),
            "val accuracy": "" if cell.get("val_accuracy") is None else f"{cell['val_accuracy']:.4f}",
            "trials (ok / stopped / failed)": f"{cell['trials']} ({cell['ok']} / {cell['stopped']} / {cell['failed']})",
            "steps": cell["steps"],
            "at the edge": "; ".join(cell.get("edges") or []) or "-",
        })
    return pd.DataFrame(rows)
