"""Figures, one idea each, with readable axes and units. Each returns the PNG path or None
when the results hold nothing to draw for it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.aggregate import best_of, pareto_front  # noqa: E402
from sentisweep.results import BASELINE_MODEL  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # a legend beside the axes included
    plt.close(fig)
    return path


def pareto(table: pd.DataFrame, cost: str, cost_label: str, path: Path) -> Path | None:
    """Accuracy against a cost; the frontier (nothing cheaper is as accurate) drawn and labelled."""
    data = table.dropna(subset=[cost, "accuracy_mean"]).reset_index(drop=True)
    if data.empty:
        return None
    front = pareto_front(data, cost)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for model, group in data.groupby("model"):
        ax.errorbar(group[cost], group["accuracy_mean"], yerr=group["accuracy_std"].fillna(0), fmt="o",
                    capsize=3, label=model, alpha=0.85)
    frontier = data[front].sort_values(cost)
    # the frontier's accuracy holds until the costliest point: drawn to there, so that a frontier
    # of one point is a visible line too (a step through one point draws nothing)
    xs = [*frontier[cost], data[cost].max()]
    ys = [*frontier["accuracy_mean"], frontier["accuracy_mean"].iloc[-1]]
    ax.step(xs, ys, where="post", color="black", lw=1.2, ls="--", label="Pareto frontier")
    ax.plot(frontier[cost], frontier["accuracy_mean"], "D", mfc="none", mec="black", ms=11)
    middle = (data[cost].min() + data[cost].max()) / 2
    for _, row in data.iterrows():
        right_half = row[cost] > middle  # labelled toward the middle: never past the axes' edge
        ax.annotate(row["variant"], (row[cost], row["accuracy_mean"]), textcoords="offset points",
                    xytext=(-6, -11) if right_half else (5, 4), ha="right" if right_half else "left", fontsize=8,
                    fontweight="bold" if front[_] else "normal",
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})  # over a line too
    ax.set_xlabel(cost_label)
    ax.set_ylabel("test accuracy (mean over seeds, bars: std)")
    ax.set_title(f"Accuracy vs {cost_label.split(' (')[0]}: the frontier is what is worth its cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot: never over a label
    return _save(fig, path)


def bars(table: pd.DataFrame, metric: str, label: str, path: Path) -> Path | None:
    """One bar per model x method variant that ran, grouped by model (a colour each),
    error bars = std over seeds. (A model x variant grid drew empty slots and shifted bars
    off their labels whenever a variant ran for only some models.)"""
    data = table.dropna(subset=[f"{metric}_mean"]).sort_values(["model", "variant"])
    if data.empty:
        return None
    models = list(dict.fromkeys(data["model"]))
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(data) + 3), 4.5))
    positions, x = [], 0.0
    for i, (_, row) in enumerate(data.iterrows()):
        if i and row["model"] != data.iloc[i - 1]["model"]:
            x += 0.6  # a gap between models
        positions.append(x)
        x += 1.0
    errors = data[f"{metric}_std"].to_numpy(dtype=float)
    ax.bar(positions, data[f"{metric}_mean"], color=[colors[m] for m in data["model"]],
           yerr=np.where(np.isnan(errors), 0, errors), capsize=3)
    ax.set_xticks(positions, data["variant"], rotation=25, ha="right", fontsize=8)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in models], labels=models,
              title="model", fontsize=8)
    ax.set_ylabel(label)
    ax.set_xlabel("method variant")
    ax.set_title(f"{label} per method and model (mean over seeds, bars: std)")
    if metric == "accuracy":
        values = data[f"{metric}_mean"].to_numpy(dtype=float)
        ax.set_ylim(max(0.0, values.min() - 0.05), min(1.0, values.max() + 0.03))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def rank_sensitivity(ok: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy against LoRA rank, one line per model, method and placement; needs 2+ ranks."""
    ranked = ok[ok["lora_r"].notna()]  # a method with a rank says so in its row, whatever its name
    return _sensitivity(ranked, "lora_r", ["model", "method", "placement"], "LoRA rank r (log scale)",
                        "LoRA rank sensitivity", path, base=2)


def _sensitivity(data: pd.DataFrame, x: str, groups: list[str], xlabel: str, title: str, path: Path,
                 base: float = 10) -> Path | None:
    """Test accuracy (mean, std over seeds) against `x` on a log axis, a line per group that has 2+ values."""
    data = data.dropna(subset=[x, "accuracy"])
    lines = [(key, g) for key, g in data.groupby(groups, dropna=False) if g[x].nunique() >= 2]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, group in lines:
        stats = group.groupby(x)["accuracy"].agg(["mean", "std"]).reset_index()
        name = f"{key[0]} {key[1]}" + (f" ({key[2]})" if len(key) > 2 else "")
        ax.errorbar(stats[x], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=base)
    ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves(ok: pd.DataFrame, path: Path) -> Path | None:
    """Training loss (and validation accuracy where evaluated) against step, per trial."""
    histories = []
    for _, row in ok.iterrows():
        history_path = row.get("history_path")
        if isinstance(history_path, str) and "://" not in history_path and Path(history_path).is_file():
            histories.append((row, pd.read_parquet(history_path)))
    if not histories:
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row, history in histories[:24]:  # more lines than that is unreadable
        label = f"{row['model']} / {row['variant']} / s{row['seed']}"
        if "loss" in history:
            losses = history.dropna(subset=["loss"])
            loss_ax.plot(losses["step"], losses["loss"], lw=1, label=label)
        if "eval_accuracy" in history:
            evals = history.dropna(subset=["eval_accuracy"])
            acc_ax.plot(evals["step"], evals["eval_accuracy"], marker="o", lw=1, label=label)
    loss_ax.set(xlabel="optimizer step", ylabel="training loss (cross-entropy)", title="Training loss")
    acc_ax.set(xlabel="optimizer step", ylabel="validation accuracy", title="Validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    return _save(fig, path)


def confusion_counts(group: pd.DataFrame) -> tuple[np.ndarray, list[str]] | None:
    """A model / variant's confusion counts over its seeds' test rows (true x predicted), from its
    predictions (any number of classes), else the binary tn/fp/fn/tp columns; with class names."""
    from analysis.load import read_predictions

    tables = [t for t in map(read_predictions, group["predictions_path"]) if t is not None]
    try:
        names = json.loads(group["config_json"].iloc[0])["data"].get("label_names") or []
    except (TypeError, KeyError, ValueError):
        names = []
    if tables:
        both = pd.concat(tables)
        size = int(max(both["label"].max(), both["predicted"].max(), len(names) - 1)) + 1
        counts = np.zeros((size, size), dtype=int)
        np.add.at(counts, (both["label"].astype(int), both["predicted"].astype(int)), 1)
    elif group[["tn", "fp", "fn", "tp"]].notna().all(axis=None):
        counts = np.array([[group["tn"].sum(), group["fp"].sum()], [group["fn"].sum(), group["tp"].sum()]])
    else:
        return None
    return counts, [names[i] if i < len(names) else str(i) for i in range(len(counts))]


def confusion_matrices(ok: pd.DataFrame, path: Path) -> Path | None:
    """Confusion counts summed over seeds, one panel per model / variant, for any number of classes."""
    groups = [(key, found) for key, group in ok.groupby(["model", "variant"])
              if (found := confusion_counts(group)) is not None][:12]
    if not groups:
        return None
    columns = min(4, len(groups))
    rows = int(np.ceil(len(groups) / columns))
    side = max(3.0, 0.45 * len(groups[0][1][0]) + 1.5)
    fig, axes = plt.subplots(rows, columns, figsize=(side * columns, side * rows), squeeze=False)
    for ax, ((model, variant), (counts, names)) in zip(axes.flat, groups, strict=False):
        ax.imshow(counts, cmap="Blues")
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=8 if len(counts) > 4 else 10,
                    # imshow spans min..max: white on the darker half of that range
                    color="white" if value > (counts.min() + counts.max()) / 2 else "black")
        ticks = list(range(len(names)))
        ax.set_xticks(ticks, [f"pred {n}" for n in names], rotation=45 if len(names) > 2 else 0, ha="right"
                      if len(names) > 2 else "center", fontsize=7)
        ax.set_yticks(ticks, [f"true {n}" for n in names], fontsize=7)
        ax.set_title(f"{model}\n{variant}", fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle("Confusion matrices (test rows, summed over seeds)")
    return _save(fig, path)


def lr_sensitivity(ok: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy against learning rate, a line per model and method; needs 2+ rates."""
    return _sensitivity(ok, "learning_rate", ["model", "method"], "learning rate (log scale)",
                        "Learning-rate sensitivity", path)


def placement(ok: pd.DataFrame, path: Path) -> Path | None:
    """Adapter placement (attention vs attention+FFN, ...) at equal method and rank."""
    adapters = ok[ok["placement"].notna()]  # the rows of methods with a placement, whatever their names
    groups = [(key, g) for key, g in adapters.groupby(["model", "method"]) if g["placement"].nunique() >= 2]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels, means, errors = [], [], []
    for (model, method), group in groups:
        for where, part in group.groupby("placement"):
            labels.append(f"{model}\n{method} {where}")
            means.append(part["accuracy"].mean())
            errors.append(part["accuracy"].std() if len(part) > 1 else 0.0)
    ax.bar(range(len(labels)), means, yerr=errors, capsize=3, color="tab:green", alpha=0.8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(max(0.0, min(means) - 0.05), min(1.0, max(means) + 0.03))
    ax.set(ylabel="test accuracy", title="Where the adapters go: attention only vs attention + FFN")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def pretrained_vs_finetuned(table: pd.DataFrame, path: Path) -> Path | None:
    """Per model: what it does without fine-tuning (zero-shot, pretrained embeddings +
    XGBoost), with fine-tuned embeddings + XGBoost, and its best fine-tuned classifier;
    baselines (TF-IDF) as a horizontal line."""
    from matplotlib.patches import Patch

    probes = table["method"].isin(["zero-shot", "embed+xgboost"])
    if not probes.any():
        return None
    colors = {"without fine-tuning": "tab:gray", "fine-tuned embeddings + XGBoost": "lightsteelblue",
              "best fine-tuned classifier": "tab:blue"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels, values, kinds = [], [], []
    for model in sorted(table.loc[probes, "model"].unique()):
        rows = table[table["model"] == model]
        for _, row in rows[rows["method"].isin(["zero-shot", "embed+xgboost"])].sort_values("variant").iterrows():
            tuned_embeddings = row["method"] == "embed+xgboost" and "finetuned" in str(row["variant"])
            variant = str(row["variant"]).replace("-finetuned-", "-finetuned-\n")  # long: wrap it
            labels.append(f"{model}\n{variant}")
            values.append(row["accuracy_mean"])
            kinds.append("fine-tuned embeddings + XGBoost" if tuned_embeddings else "without fine-tuning")
        tuned = rows[~rows["method"].isin(["zero-shot", "embed+xgboost"])]
        best = best_of(tuned)  # by validation accuracy
        if best is not None:
            labels.append(f"{model}\nbest fine-tuned:\n{best['variant']}")
            values.append(best["accuracy_mean"])
            kinds.append("best fine-tuned classifier")
    ax.bar(range(len(labels)), values, color=[colors[k] for k in kinds])
    for x, value in enumerate(values):
        ax.text(x, value + 0.005, f"{value:.3f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    handles = [Patch(color=colors[k], label=k) for k in colors if k in kinds]
    for _, row in table[table["model"] == BASELINE_MODEL].iterrows():
        ax.axhline(row["accuracy_mean"], color="tab:red", ls="--")
        handles.append(Patch(color="tab:red", label=f"TF-IDF baseline ({row['accuracy_mean']:.3f})"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set(ylabel="test accuracy", title="Without fine-tuning, fine-tuned embeddings, fine-tuned classifier")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def optuna_study(study_path: Path, out: Path) -> list[Path]:
    """Optimisation history and parameter importance of the Optuna study (a journal) of a search."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # matplotlib backend
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(study_path)))
    made = []
    for summary in optuna.study.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(finished) < 2:
            continue
        # a multi-objective study: its history and importances for the first objective (validation accuracy)
        first = {"target": lambda trial: trial.values[0], "target_name": "val_accuracy"} if len(
            study.directions) > 1 else {}
        for name, draw in (("history", optuna_plots.plot_optimization_history),
                           ("importance", optuna_plots.plot_param_importances)):
            try:
                ax = draw(study, **first)
            except (ValueError, RuntimeError):  # importance needs varied parameters
                continue
            figure = ax.figure if hasattr(ax, "figure") else ax[0].figure
            made.append(_save(figure, out / f"optuna_{summary.study_name}_{name}.png"))
    return made


def expected_max_curves(table: pd.DataFrame, path: Path, budget: str = "") -> Path | None:
    """Expected best validation accuracy against the number of trials, one line per method
    (analysis/tuning.py): still rising at the end means more trials would help."""
    if table.empty:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, group in table.groupby("model / method"):
        ax.plot(group["trials"], group["expected best val accuracy"], marker="o", label=name)
    ax.set_xlabel("trials of tuning (n)")
    ax.set_ylabel("expected best validation accuracy of n trials")
    ax.set_title("Expected best validation accuracy vs tuning budget (Dodge et al. 2019)"
                 + ("\n" + textwrap.fill(budget, 110) if budget else ""), fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def search_front(rows: pd.DataFrame, front: np.ndarray, cost: str, cheapest: pd.Series, path: Path) -> Path | None:
    """A multi-objective search's finished trials: validation accuracy against one cost, the
    trials on the front (over all the search's objectives) marked, the cheapest near the best ringed."""
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    scale, unit = (2**20, "MiB") if cost.endswith("bytes") else (1, "s" if cost.endswith("seconds") else "")
    x = rows[cost] / scale
    ax.scatter(x[~front], rows.loc[~front, "best_val_accuracy"], color="grey", alpha=0.6, label="trials")
    ax.scatter(x[front], rows.loc[front, "best_val_accuracy"], color="tab:red", label="Pareto front")
    order = np.argsort(x[front].to_numpy())
    ax.plot(x[front].to_numpy()[order], rows.loc[front, "best_val_accuracy"].to_numpy()[order], color="tab:red",
            lw=1, ls="--")
    ax.scatter([cheapest[cost] / scale], [cheapest["best_val_accuracy"]], s=250, facecolors="none",
               edgecolors="black", label="cheapest near the best")
    ax.set_xlabel(f"{cost.replace('_', ' ')}" + (f" ({unit})" if unit else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Search trials: validation accuracy vs {cost.replace('_', ' ')}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
