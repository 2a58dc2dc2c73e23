"""Build the report: tables, figures, significance, examples -> report.md, report.html
(self-contained, images embedded), summary.json, and CSV / LaTeX tables."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.aggregate import aggregate, best_of, display_table
from analysis.load import ResultsError, load_results, read_predictions, split_by_status
from analysis.significance import Comparison, compare, correctness
from analysis.tradeoffs import describe, search_objectives, tradeoffs
from analysis.tuning import choices_table, expected_max_table, store_of, tuning_of
from sentisweep.layout import DRIVER_LOCK
from sentisweep.results import BASELINE_MODEL, best_by_validation
from sentisweep.screen import shown, status_counts
from sentisweep.storage import driver_running, replaced_whole


def group_correctness(ok: pd.DataFrame) -> dict[str, pd.Series]:
    """`model / variant` -> per-test-row fraction of its seeds that were right."""
    groups = {}
    for (model, variant), group in ok.groupby(["model", "variant"]):
        tables = [t for t in (read_predictions(p) for p in group["predictions_path"]) if t is not None]
        if tables:
            groups[f"{model} / {variant}"] = correctness(tables)
    return groups


def comparisons(ok: pd.DataFrame, table: pd.DataFrame) -> list[Comparison]:
    """Each variant against its model's full fine-tuning, and against the best variant overall (by
    validation accuracy: analysis.aggregate.best_of)."""
    right = group_correctness(ok)
    best = best_of(table)
    best_name = f"{best['model']} / {best['variant']}" if best is not None else None
    done, out = set(), []
    for _, row in table.iterrows():
        name = f"{row['model']} / {row['variant']}"
        fulls = table[(table["model"] == row["model"]) & (table["method"] == "full")]
        references = [f"{r['model']} / {r['variant']}" for _, r in fulls.iterrows()] + [best_name] * bool(best_name)
        for reference in references:
            pair = tuple(sorted((name, reference)))
            if name == reference or pair in done or name not in right or reference not in right:
                continue
            done.add(pair)
            out.append(compare(name, right[name], reference, right[reference]))
    return out


def examples(ok: pd.DataFrame, per_method: int = 3) -> tuple[pd.DataFrame, str]:
    """Most confident errors and a few confident correct answers per model / variant, labels by
    the config's label_names, with the review text shortened, read from the data source the trial
    used where it is on this machine; a source only on the Hub is not fetched for it (offline that
    cost 25 s of retries): the texts are left out and the second value says so."""
    from sentisweep.config import DataConfig
    from sentisweep.trial.data import load_task_data, resolve_source

    rows, texts, note = [], {}, ""
    for (model, variant), group in ok.groupby(["model", "variant"]):
        first = group.iloc[0]
        predictions = read_predictions(first["predictions_path"])
        if predictions is None or not isinstance(first["config_json"], str):
            continue
        try:  # a trial's config, or a probe's settings with the embedding job's data block
            data_config = DataConfig.model_validate(json.loads(first["config_json"])["data"])
        except (ValueError, KeyError, TypeError):
            continue
        key = data_config.model_dump_json()
        if key not in texts:
            texts[key] = None
            if not Path(resolve_source(data_config.source)).expanduser().exists():
                note = (f"Texts left out: the data source {data_config.source!r} is not on this machine (offline, "
                        "set SENTISWEEP_DATA_MIRROR to its local copy).")
            else:
                try:
                    texts[key] = load_task_data(data_config).splits["test"].set_index("row_id")["text"]
                except Exception as err:  # examples are optional: say why they have no text
                    note = f"Texts left out: {data_config.source!r} could not be read ({type(err).__name__})."
        names = data_config.label_names or []
        wrong = predictions[predictions["predicted"] != predictions["label"]].nlargest(per_method, "probability")
        right = predictions[predictions["predicted"] == predictions["label"]].nlargest(per_method - 1, "probability")
        for kind, part in (("confident error", wrong), ("correct", right)):
            for _, p in part.iterrows():
                text = "" if texts[key] is None else str(texts[key].get(p["row_id"], ""))
                rows.append({"model / method": f"{model} / {variant}", "kind": kind, "row": p["row_id"],
                             "label": _label(names, p["label"]), "predicted": _label(names, p["predicted"]),
                             "confidence": round(float(p["probability"]), 3),
                             "text": (text[:180] + "...") if len(text) > 180 else text})
    frame = pd.DataFrame(rows)
    return (frame.drop(columns="text") if note else frame), note


def _label(names: list[str], label) -> str:
    """A class by its configured name (label i means names[i]), else its number."""
    return names[int(label)] if int(label) < len(names) else str(int(label))


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    # a cell's own "|" or line break would end its row
    cells = frame.map(lambda v: str(v).replace("|", "/").replace("\n", " "))
    return cells.to_markdown(index=False, tablefmt="pipe", disable_numparse=True) + "\n"


def study_file(location: str, out: Path) -> Path | None:
    """A search's Optuna journal at `location` (local, or copied here from object storage), or None."""
    from sentisweep.layout import STUDY_JOURNAL
    from sentisweep.storage import Store

    try:
        store = Store(location)
    except ValueError:  # a results file, not a folder: no study beside it
        return None
    if not store.is_file(STUDY_JOURNAL):
        return None
    if not store.remote:
        return Path(store.path(STUDY_JOURNAL))
    local = out / ".study" / STUDY_JOURNAL
    local.parent.mkdir(parents=True, exist_ok=True)
    store.get_file(local, STUDY_JOURNAL)
    return local


def _wide_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """The expected-max table with one row per method and one column per number of trials."""
    if curve.empty:
        return curve
    wide = curve.pivot(index="model / method", columns="trials", values="expected best val accuracy")
    wide.columns = [f"n={n}" for n in wide.columns]
    return wide.reset_index()


def best_against_baselines(ok: pd.DataFrame) -> list[Comparison]:
    """A search's best trial by validation accuracy (never test: the honest pick) against each
    baseline on the same test rows."""
    best = best_by_validation(ok[ok["model"] != BASELINE_MODEL])
    if best is None:
        return []
    best_right = group_correctness(ok[ok["trial_id"] == best["trial_id"]])
    baselines = group_correctness(ok[ok["model"] == BASELINE_MODEL])
    return [compare(name, right, baseline, baseline_right)
            for name, right in best_right.items() for baseline, baseline_right in baselines.items()]


def build_report(locations: list[str], out: Path, within_points: float = 1.0) -> tuple[Path, str]:
    """The report of `locations` in `out`, and the screen that says what it found. `within_points`:
    for a multi-objective search, the cheapest trial within this many points of the best
    validation accuracy is named. An earlier report in `out` is replaced whole once the new one is
    written (no figure of it stays behind); a folder holding anything else is refused."""
    check_out(out)
    running = running_runs(locations)
    try:
        results = load_results(locations)
    except ResultsError as err:  # a run just started, or still tuning, has no row yet
        raise ResultsError(str(err) + "".join(f"; {where} is running now: no trial of it has finished yet"
                                              for where in running)) from None
    ok, other = split_by_status(results)
    if ok.empty:
        listing = "; ".join(f"{r.trial_id}: {r.status} ({str(r.error).splitlines()[0][:120]})"
                            for r in other.itertuples())
        raise ResultsError(f"no successful trial to analyse ({results['status'].value_counts().to_dict()}): {listing}")
    with replaced_whole(out, "report") as folder:
        table, untuned, figures = write_report_files(folder, locations, results, ok, other, within_points, running)
    screen = report_screen(out / "report.html", locations, results, table, untuned, figures)
    return out / "report.html", screen + "".join(f"\nWARNING: {partial(where)}" for where in running)


def running_runs(locations: list[str]) -> list[str]:
    """The runs among `locations` (a run's folder, or a storage folder holding runs) whose driver
    runs now: their trials so far are not the run's result."""
    folders = [Path(location) for location in locations if Path(location).is_dir()]  # an s3:// URI is none
    runs = [run for folder in folders for run in (folder, *sorted(p.parent for p in folder.glob(f"*/{DRIVER_LOCK}")))]
    return [shown(str(run)) for run in runs if driver_running(run)]


def partial(where: str) -> str:
    return (f"{where} is running now (its driver holds {DRIVER_LOCK}): this report has only the trials finished "
            "so far; run it again when that run ends")


REPORT_FILES = ("report.md", "report.html", "summary.json", "table.csv", "table_numbers.csv", "table.tex", ".study")


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out = {str(out)!r}: a file, not a folder")
    there = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    # an earlier report, and nothing beside it, is ours to replace: not a results store, not a user's notes
    foreign = [name for name in there if name not in REPORT_FILES and not name.endswith(".png")]
    if there and ("summary.json" not in there or foreign):
        foreign = foreign or there
        shown_names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ResultsError(f"--out = {str(out)!r} holds what is not a report ({shown_names}); name a new folder, "
                           "or an earlier report's to replace that report")


def write_report_files(out: Path, locations: list[str], results: pd.DataFrame, ok: pd.DataFrame, other: pd.DataFrame,
                       within_points: float, running: list[str]) -> tuple[pd.DataFrame, list[str], int]:
    """Every file of the report in `out`; the table, the variants that ran untuned, the figures made."""
    table = aggregate(ok)
    readable = display_table(table)
    readable.to_csv(out / "table.csv", index=False)
    table.to_csv(out / "table_numbers.csv", index=False)
    (out / "table.tex").write_text(readable.to_latex(index=False, escape=True))
    figures = result_figures(table, ok, out)
    tuning_sections = tuning_and_search(locations, results, within_points, out, figures)
    figures = {title: path for title, path in figures.items() if path is not None}
    # verdicts only from trials that ran as the sweep meant: not a cell whose tuning failed and
    # that --untuned-fallback ran at its configured settings
    as_meant = ok[ok["tuning"] != "untuned"]
    untuned = sorted(set(ok.loc[ok["tuning"] == "untuned", "variant"]))
    tests = comparisons(as_meant, aggregate(as_meant)) if not as_meant.empty else []
    significance = pd.DataFrame([c.as_row() for c in tests])
    example_rows, examples_note = examples(ok)
    not_ok = other[["trial_id", "model", "variant", "status", "error"]].copy()
    not_ok["error"] = not_ok["error"].astype(str).str.split("\n").str[0].str[:160]
    before_figures = [
        ("Trials", f"{status_counts(results)}. Only `ok` trials are averaged; the others are "
                   "listed at the end." + "".join(f" **{partial(where)}.**" for where in running) + "\n"),
        ("Results per model and method", _markdown(readable)),
        *tuning_sections,
        ("Significance", "Paired bootstrap (2,000 resamples of the test rows) of the accuracy "
                         "difference, and a paired test of it (`paired p`: McNemar's exact test; for methods with "
                         "several seeds, the permutation test of the seed-averaged correctness that McNemar's "
                         "is on right/wrong rows), each method against its "
                         "model's full fine-tuning and against the best method."
                         + (f" Left out: {', '.join(untuned)}, whose tuning found no setting (run untuned by "
                            "--untuned-fallback)." if untuned else "") + "\n\n" + _markdown(significance))]
    after_figures = [
        ("Example predictions", (examples_note + "\n\n" if examples_note else "") + _markdown(example_rows)),
        ("Failed, skipped and stopped trials", _markdown(not_ok))]
    summary = {"counts": results["status"].value_counts().to_dict(),
               "table": json.loads(table.to_json(orient="records")), "significance": [c.as_row() for c in tests],
               "figures": [p.name for p in figures.values()], "untuned": untuned, "running": running}
    write_report(out, locations, before_figures, figures, after_figures, summary)
    return table, untuned, len(figures)


def report_screen(path: Path, locations: list[str], results: pd.DataFrame, table: pd.DataFrame,
                  untuned: list[str], figures: int) -> str:
    """What the report found, on the terminal: the counts, each model's best, where the files
    are, the next command, and last what the reader must not miss: failed and skipped trials
    (stopped ones are a search's scheduler at work), cells that ran untuned."""
    lines = [status_counts(results), "best per model by validation accuracy (its test accuracy):"]
    lines += [f"  {row.model} / {row.variant}: {row.accuracy_mean:.4f} ({row.seeds} seed{'s' * (row.seeds > 1)})"
              for row in table[table["best_for_model"]].itertuples()]
    lines.append(f"report: {shown(str(path))} (report.md, summary.json, table.csv and {figures} figures beside it)")
    if len(table) > 1:  # a comparison needs two rows of the table
        stores = " ".join(map(shown, locations))
        lines.append(f"next: python -m analysis compare {stores} {' '.join(top_two(table))}   # the "
                     "two best by validation accuracy, on the same test rows (any two 'model / method' of the table)")
    lines += [f"WARNING: {count} trial(s) {status}: listed at the end of the report, with why"
              for status, count in results["status"].value_counts().items() if status in ("failed", "skipped")]
    if untuned:
        lines.append(f"WARNING: {', '.join(untuned)} ran untuned (--untuned-fallback): left out of the significance "
                     "tests")
    return "\n".join(lines)


def top_two(table: pd.DataFrame) -> list[str]:
    """The table's two best rows by validation accuracy (the table's order where it has none), as
    `python -m analysis compare` takes them: 'model / variant', quoted for the shell."""
    rows = table.sort_values("best_val_accuracy_mean", ascending=False, kind="stable", na_position="last")
    return [shlex.quote(f"{row.model} / {row.variant}") for row in rows.head(2).itertuples()]


def result_figures(table: pd.DataFrame, ok: pd.DataFrame, out: Path) -> dict[str, Path | None]:
    """The figures every report has (None where the results hold nothing to draw)."""
    return {
        "Accuracy vs peak memory": plots.pareto(table, "peak_memory_mib_mean", "peak memory (MiB)",
                                                out / "pareto_memory.png"),
        "Accuracy vs training time": plots.pareto(table, "train_seconds_mean", "training time (s)",
                                                  out / "pareto_time.png"),
        "Accuracy per method": plots.bars(table, "accuracy", "test accuracy", out / "accuracy_bars.png"),
        "Training time per method": plots.bars(table, "train_seconds", "training time (s)", out / "time_bars.png"),
        "Trainable parameters per method": plots.bars(table, "trainable_percent", "trainable parameters (%)",
                                                      out / "params_bars.png"),
        "LoRA rank sensitivity": plots.rank_sensitivity(ok, out / "rank_sensitivity.png"),
        "Learning curves": plots.learning_curves(ok, out / "learning_curves.png"),
        "Confusion matrices": plots.confusion_matrices(ok, out / "confusion.png"),
        "Learning-rate sensitivity": plots.lr_sensitivity(ok, out / "lr_sensitivity.png"),
        "Adapter placement": plots.placement(ok, out / "placement.png"),
        "Pretrained vs fine-tuned": plots.pretrained_vs_finetuned(table, out / "pretrained_vs_finetuned.png"),
    }


def tuning_and_search(locations: list[str], results: pd.DataFrame, within_points: float, out: Path,
                      figures: dict) -> list[tuple[str, str]]:
    """The sections of a tuned sweep (budget, choices) and of a search (its best against the
    baselines, its Pareto front), and the expected-max curves of both; their figures go into
    `figures`."""
    studies = {location: study_file(location, out) for location in locations}  # a search's, looked up once
    for study in studies.values():
        for png in plots.optuna_study(study, out) if study else []:
            figures[f"Optuna: {png.stem.split('_')[-1]} ({png.stem.split('_', 1)[1].rsplit('_', 1)[0]})"] = png
    sections, curves = [], []
    for location in locations:
        tuned = tuning_of(location)
        if tuned:  # a tuned ablation: the budget, each cell's choice, and the expected-max curves
            chosen, tuning_rows = tuned
            sections.append(("Equal-budget tuning", f"Budget: {chosen['budget_text']}.\n\n"
                             + _markdown(choices_table(chosen))))
            curves.append((expected_max_table(tuning_rows, ["model", "variant"]), chosen["budget_text"], location))
        elif studies[location]:  # a search: its own trials (not the baselines beside them)
            own = load_results([location]) if len(locations) > 1 else results
            searched = own[own["model"] != BASELINE_MODEL]
            curves.append((expected_max_table(searched, ["model", "method"]), "", location))
            sections += search_sections(own, searched, store_of(location), within_points, out, figures)
    for number, (curve, budget, location) in enumerate(curves, 1):
        name = "expected_max.png" if number == 1 else f"expected_max_{number}.png"
        # two stores' curves (a tuned sweep's and a search's) under one heading could not be told apart
        title = "Expected best validation accuracy vs trials" + (f": {location}" if len(curves) > 1 else "")
        figures[title] = plots.expected_max_curves(curve, out / name, budget)
        sections.append((title,
                         "Dodge et al. 2019: the expected best of n trials drawn from those run "
                         "(a trial stopped early counts with the accuracy it had reached).\n\n"
                         + _markdown(_wide_curve(curve))))
    return sections


def search_sections(own: pd.DataFrame, searched: pd.DataFrame, store, within_points: float, out: Path,
                    figures: dict) -> list[tuple[str, str]]:
    """A search's best trial against the baselines, and with several objectives its Pareto front."""
    sections = []
    versus = best_against_baselines(own[own["status"] == "ok"])
    if versus:
        sections.append(("Search: its best trial against the baselines",
                         "The trial with the best validation accuracy (chosen without looking at "
                         "test), on the same test rows as each baseline: paired bootstrap "
                         "(2,000 resamples) of the accuracy difference and McNemar's exact test (`paired p`).\n\n"
                         + _markdown(pd.DataFrame([c.as_row() for c in versus]))))
    objectives = search_objectives(store)
    found = tradeoffs(searched, objectives, within_points) if objectives and len(objectives) > 1 else {}
    if found:
        text, front = describe(found, objectives, within_points)
        sections.append(("Search trade-offs: the Pareto front", text + "\n" + _markdown(front)))
        for cost in found["costs"]:
            figures[f"Search: validation accuracy vs {cost}"] = plots.search_front(
                found["rows"], found["front"], cost, found["cheapest"], out / f"search_front_{cost}.png")
    return sections


def write_report(out: Path, locations: list[str], before_figures: list, figures: dict[str, Path],
                 after_figures: list, summary: dict) -> Path:
    """report.md, report.html (the same text through markdown-it, figures inline as base64 PNGs,
    so the file opens anywhere, offline) and summary.json in `out`."""
    from markdown_it import MarkdownIt

    def document(image_source) -> str:
        lines = ["# sentisweep report", f"Sources: {', '.join(map(str, locations))}\n"]
        lines += [f"## {title}\n{body}" for title, body in before_figures]
        lines += ["## Figures"]
        lines += [f"### {title}\n![{title}]({image_source(path)})\n" for title, path in figures.items()]
        lines += [f"## {title}\n{body}" for title, body in after_figures]
        return "\n".join(lines)

    (out / "report.md").write_text(document(lambda path: path.name))
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(  # raw HTML in a cell stays text
        document(lambda path: "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()))
    (out / "report.html").write_text(HTML_HEAD + html)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return out / "report.html"


HTML_HEAD = ("<!doctype html><meta charset='utf-8'><title>sentisweep report</title>\n<style>"
             "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}</style>\n")
