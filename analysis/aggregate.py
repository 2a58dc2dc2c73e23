"""Per model x method variant: mean, std and a 95% interval over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.tradeoffs import pareto_mask

METRICS = {  # column -> how the tables name it
    "accuracy": "accuracy", "best_val_accuracy": "validation accuracy", "f1": "F1",
    "peak_memory_mib": "peak memory (MiB)",
    "train_seconds": "train time (s)", "trainable_params": "trainable params",
    "trainable_percent": "trainable %", "train_samples_per_second": "samples/s",
}


def mean_interval(values: pd.Series, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std, and the t-interval half-width (nan with one value)."""
    values = values.dropna().astype(float)
    n = len(values)
    if n == 0:
        return (np.nan,) * 4
    mean = float(values.mean())
    if n == 1:
        return mean, np.nan, np.nan, 1
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n))
    return mean, std, half, n


def aggregate(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant) over seeds, with mean/std/ci columns per metric, the
    accuracy relative to the same model's full fine-tuning, and the best variant per model."""
    ok = ok.copy()
    ok["peak_memory_mib"] = ok["peak_memory_bytes"].astype(float) / 2**20
    rows = []
    for (model, variant), group in ok.groupby(["model", "variant"], sort=True):
        row = {"model": model, "variant": variant, "method": group["method"].iloc[0], "seeds": len(group)}
        for column in METRICS:
            mean, std, half, _ = mean_interval(group[column])
            row.update({f"{column}_mean": mean, f"{column}_std": std, f"{column}_ci95": half})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    full = table[table["method"] == "full"].groupby("model")["accuracy_mean"].max()
    table["accuracy_vs_full"] = table["accuracy_mean"] / table["model"].map(full)
    validation = table["best_val_accuracy_mean"]
    best = validation.groupby(table["model"]).transform("max")
    table["best_for_model"] = np.isclose(validation, best, rtol=0, atol=1e-12) & validation.notna()  # ties all
    return table


def best_of(table: pd.DataFrame) -> pd.Series | None:
    """The analysis's one "best" rule, as sentisweep.results.best_by_validation is for trials: the
    highest mean validation accuracy over seeds, never the test's (the test accuracy is what is
    reported; choosing by it would flatter the choice). None where no row has one."""
    known = table.dropna(subset=["best_val_accuracy_mean"])
    return None if known.empty else known.loc[known["best_val_accuracy_mean"].idxmax()]


def pareto_front(table: pd.DataFrame, cost: str, quality: str = "accuracy_mean") -> pd.Series:
    """True where no other row is at least as good on both axes and better on one (lower cost,
    higher quality); a row missing either is never on it."""
    points = np.column_stack([table[cost].to_numpy(float), -table[quality].to_numpy(float)])
    known = ~np.isnan(points).any(axis=1)
    front = np.zeros(len(table), dtype=bool)
    front[known] = pareto_mask(points[known])
    return pd.Series(front, index=table.index)


def format_cell(mean: float, std: float, digits: int) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table people read: mean ± std per metric, best per model marked."""
    out = pd.DataFrame({
        "model": table["model"],
        "method": table["variant"] + np.where(table["best_for_model"], " **(best)**", ""),
        "seeds": table["seeds"],
        "accuracy": [format_cell(m, s, 4) for m, s in zip(table["accuracy_mean"], table["accuracy_std"], strict=True)],
        "95% CI": [("-" if np.isnan(h) else f"± {h:.4f}") for h in table["accuracy_ci95"]],
        "vs full FT": [("-" if np.isnan(v) else f"{v:.1%}") for v in table["accuracy_vs_full"]],
        "F1": [format_cell(m, s, 4) for m, s in zip(table["f1_mean"], table["f1_std"], strict=True)],
        "peak MiB": [format_cell(m, s, 0) for m, s in zip(table["peak_memory_mib_mean"],
                                                          table["peak_memory_mib_std"], strict=True)],
        "train s": [format_cell(m, s, 1) for m, s in zip(table["train_seconds_mean"],
                                                         table["train_seconds_std"], strict=True)],
        "trainable": [("-" if np.isnan(p) else f"{p:,.0f}" if np.isnan(q) else f"{p:,.0f} ({q:.2f}%)") for p, q in
                      zip(table["trainable_params_mean"], table["trainable_percent_mean"], strict=True)],
        "samples/s": [format_cell(m, s, 1) for m, s in zip(table["train_samples_per_second_mean"],
                                                           table["train_samples_per_second_std"], strict=True)],
    })
    return out
