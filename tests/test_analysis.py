"""Analysis: aggregates, Pareto sets and significance against hand-computed cases."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import aggregate, mean_interval, pareto_front
from analysis.significance import compare, correctness

pytestmark = pytest.mark.unit


def _ok_rows(rows):
    frame = pd.DataFrame(rows)
    for column, value in {"status": "ok", "f1": 0.5, "trainable_params": 10, "trainable_percent": 1.0,
                          "train_samples_per_second": 5.0, "best_val_accuracy": 0.5}.items():
        if column not in frame:
            frame[column] = value
    return frame


def test_aggregates_by_hand():
    ok = _ok_rows([
        {"model": "m", "variant": "full", "method": "full", "accuracy": 0.80, "peak_memory_bytes": 2**30,
         "train_seconds": 10, "best_val_accuracy": 0.80},
        {"model": "m", "variant": "full", "method": "full", "accuracy": 0.90, "peak_memory_bytes": 2**30,
         "train_seconds": 20, "best_val_accuracy": 0.82},
        {"model": "m", "variant": "lora", "method": "lora", "accuracy": 0.84, "peak_memory_bytes": 2**29,
         "train_seconds": 5, "best_val_accuracy": 0.83},
        {"model": "m", "variant": "lora", "method": "lora", "accuracy": 0.86, "peak_memory_bytes": 2**29,
         "train_seconds": 7, "best_val_accuracy": 0.85},
    ])
    table = aggregate(ok).set_index("variant")
    assert table.loc["full", "accuracy_mean"] == pytest.approx(0.85)
    assert table.loc["full", "accuracy_std"] == pytest.approx(np.sqrt(0.005))  # ((0.05^2)*2)/(2-1)
    # t(0.975, df=1) = 12.706; half-width = 12.706 * 0.0707 / sqrt(2) = 0.6353
    assert table.loc["full", "accuracy_ci95"] == pytest.approx(12.7062 * np.sqrt(0.005) / np.sqrt(2), rel=1e-4)
    assert table.loc["lora", "accuracy_vs_full"] == pytest.approx(0.85 / 0.85)
    assert table.loc["lora", "peak_memory_mib_mean"] == 512 and table.loc["full", "train_seconds_mean"] == 15
    # the best by validation accuracy (0.84 against 0.81), though the test accuracies tie at 0.85
    assert list(table.index[table["best_for_model"]]) == ["lora"]


def test_mean_interval_single_value():
    mean, std, half, n = mean_interval(pd.Series([0.7]))
    assert mean == 0.7 and np.isnan(std) and np.isnan(half) and n == 1


def test_pareto_front_by_hand():
    table = pd.DataFrame({"cost": [1.0, 2.0, 3.0, 2.0, 4.0], "accuracy_mean": [0.80, 0.85, 0.90, 0.84, 0.89]})
    # (2, .84) is dominated by (2, .85); (4, .89) by (3, .90)
    assert pareto_front(table, "cost").tolist() == [True, True, True, False, False]


def _predictions(correct: list[int]) -> pd.DataFrame:
    labels = np.ones(len(correct), dtype=int)
    return pd.DataFrame({"row_id": [f"test:{i}" for i in range(len(correct))], "label": labels,
                         "predicted": np.where(np.array(correct) == 1, 1, 0)})


def test_identical_predictions_are_within_noise():
    right = correctness([_predictions([1, 0, 1, 1, 0, 1] * 20)])
    result = compare("a", right, "b", right)
    assert result.p_value == 1.0 and result.ci_low == 0 == result.ci_high == result.difference
    assert result.verdict.startswith("within noise")


def test_clearly_better_method_excludes_zero():
    rng = np.random.default_rng(1)
    good = (rng.random(500) < 0.9).astype(int)
    bad = (rng.random(500) < 0.6).astype(int)
    result = compare("good", correctness([_predictions(list(good))]), "bad", correctness([_predictions(list(bad))]))
    assert result.ci_low > 0 and result.p_value < 1e-6
    assert result.verdict == "good is better (95% interval excludes 0)"


def test_mcnemar_by_hand():
    # a right on rows 0-9, b right on rows 0-4 and 10-11: a-only 5, b-only 2 -> exact binomial p
    a = [1] * 10 + [0] * 10
    b = [1] * 5 + [0] * 5 + [1, 1] + [0] * 8
    result = compare("a", correctness([_predictions(a)]), "b", correctness([_predictions(b)]))
    assert (result.only_a_right, result.only_b_right) == (5, 2)
    assert result.p_value == pytest.approx(0.453125)  # 2 * P(X <= 2), X ~ Bin(7, 0.5) = 2 * 29/128


def test_seeds_split_against_one_run_are_half_a_win():
    # rows 0-99: a right, b's two seeds split (b 0.5); rows 100-149: a wrong, b right twice; the
    # rest both right. Mean difference (100 x 0.5 - 50) / 200 = 0: a sign test of which side is
    # higher per row (100 rows against 50) said p 6e-5; the paired test of the difference says noise.
    a = [1] * 100 + [0] * 50 + [1] * 50
    seed_1 = [1] * 50 + [0] * 50 + [1] * 100
    seed_2 = [0] * 50 + [1] * 50 + [1] * 100
    b = correctness([_predictions(seed_1), _predictions(seed_2)])
    result = compare("a", correctness([_predictions(a)]), "b", b)
    assert (result.only_a_right, result.only_b_right, result.difference) == (100, 50, 0.0)
    assert result.p_value > 0.9 and result.verdict.startswith("within noise")


def test_seeds_average_per_example():
    right = correctness([_predictions([1, 1, 0, 0]), _predictions([1, 0, 0, 1])])
    assert right.tolist() == [1.0, 0.5, 0.0, 0.5]


# -- the report from a real (tiny) sweep's output ------------------------------------------

@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """Two tiny models x two methods x two seeds, trained for real in-process."""
    from sentisweep.config_load import parse_sweep_config
    from sentisweep.plan import expand
    from sentisweep.storage import Store
    from sentisweep.trial.run import run_trial

    root = tmp_path_factory.mktemp("store")
    fixtures = str(Path(__file__).parents[1] / "data" / "tiny_reviews")
    sweep = parse_sweep_config({
        "name": "tiny", "models": ["tiny-bert", "tiny-qwen3"], "seeds": [1, 2],
        "methods": ["full", {"name": "lora", "r": 4}, "zero-shot"],
        "data": {"source": fixtures, "train_size": 48, "eval_size": 16, "test_size": 32,
                 "cache_dir": str(root / "cache")},
        "training": {"max_steps": 3, "batch_size": 8, "max_length": 32, "learning_rate": 1e-3,
                     "logging_steps": 1}})
    from sentisweep.results import gather_results

    planned = expand(sweep, Store(str(root)), "cpu")
    for trial in planned:
        if trial.skip_reason is None:
            run_trial(trial.config)
    results = gather_results(planned, Store(str(root)))
    results.to_parquet(root / "tiny" / "results.parquet")
    return root / "tiny"


def test_report_has_every_section_and_valid_images(tiny_results, tmp_path, capsys):
    from analysis.__main__ import main

    assert main(["report", str(tiny_results), "--out", str(tmp_path / "report")]) == 0
    screen = capsys.readouterr().out.splitlines()  # what happened, and last what must not be missed
    assert screen[0] == "12 trials: 10 ok, 0 failed, 2 skipped, 0 stopped"
    assert any(line.startswith("  tiny-bert / ") for line in screen)
    # the next command names the two best by validation accuracy, and runs as printed
    table = pd.read_csv(tmp_path / "report" / "table_numbers.csv")
    validation = dict(zip(table["model"] + " / " + table["variant"], table["best_val_accuracy_mean"], strict=True))
    (next_line,) = (line for line in screen if line.startswith("next: "))
    command = shlex.split(next_line.removeprefix("next: ").split("   #")[0])
    assert command[:5] == ["python", "-m", "analysis", "compare", str(tiny_results)]
    assert [validation[name] for name in command[5:]] == sorted(validation.values(), reverse=True)[:2]
    assert main(command[3:]) == 0 and "paired p" in capsys.readouterr().out
    assert screen[-1] == "WARNING: 2 trial(s) skipped: listed at the end of the report, with why"
    one = pd.read_parquet(tiny_results / "results.parquet").query("model == 'tiny-bert' and method == 'full'")
    (tmp_path / "one").mkdir()
    one.to_parquet(tmp_path / "one" / "results.parquet")
    assert main(["report", str(tmp_path / "one"), "--out", str(tmp_path / "one_report")]) == 0
    assert "compare" not in capsys.readouterr().out  # a comparison needs two rows of the table
    report = tmp_path / "report"
    text = (report / "report.md").read_text()
    for section in ["## Trials", "## Results per model and method", "## Significance", "## Figures",
                    "## Example predictions", "## Failed, skipped and stopped trials"]:
        assert section in text, section
    assert "tiny-bert__zero-shot__s1" in text  # the skipped trials are listed, not averaged
    pngs = sorted(report.glob("*.png"))
    assert {p.name for p in pngs} >= {"pareto_memory.png", "pareto_time.png", "accuracy_bars.png",
                                      "learning_curves.png", "confusion.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs) and "<table>" in page
    summary = json.loads((report / "summary.json").read_text())
    assert summary["counts"]["ok"] == 10 and summary["counts"]["skipped"] == 2


def test_a_report_replaces_an_earlier_report_whole_and_nothing_else(tiny_results, tmp_path, capsys, monkeypatch):
    from analysis import report as report_module
    from analysis.__main__ import main

    out = tmp_path / "report"
    assert main(["report", str(tiny_results), "--out", str(out)]) == 0
    two_models = {p.name for p in out.glob("*.png")}
    assert {p.name for p in out.iterdir()} - two_models <= set(report_module.REPORT_FILES)  # a rerun replaces them
    one = pd.read_parquet(tiny_results / "results.parquet").query("model == 'tiny-bert' and method == 'full'")
    (tmp_path / "one").mkdir()
    one.to_parquet(tmp_path / "one" / "results.parquet")
    # a report that fails while it is written leaves the earlier one as it was, and nothing beside it
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    monkeypatch.setattr(report_module, "write_report", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report_module.build_report([str(tmp_path / "one")], out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "report"]
    monkeypatch.undo()
    # one method's report over the two models' report: none of the old figures stays behind
    assert main(["report", str(tmp_path / "one"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 2}
    assert {p.name for p in out.glob("*.png")} == set(summary["figures"]) < two_models
    # a folder that holds anything but a report is not the report's to replace: a user's notes beside one,
    (out / "notes.txt").write_text("what I made of it")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "one"), "--out", str(out)]) == 2
    assert f"--out = {str(out)!r} holds what is not a report (notes.txt)" in capsys.readouterr().err
    # or a results store
    store = sorted(p.name for p in tiny_results.rglob("*"))
    capsys.readouterr()
    assert main(["report", str(tiny_results), "--out", str(tiny_results)]) == 2
    assert f"--out = {str(tiny_results)!r} holds what is not a report (" in capsys.readouterr().err
    assert sorted(p.name for p in tiny_results.rglob("*")) == store


def test_a_report_of_a_run_whose_driver_runs_now_says_it_is_partial(tiny_results, tmp_path, capsys):
    import fcntl

    from analysis.__main__ import main

    run = tmp_path / "storage" / "tiny"  # the run's folder, inside the storage folder a user may name
    run.mkdir(parents=True)
    with open(run / ".driver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the driver holds it while the run goes on
        assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 2  # still tuning: no row yet
        assert capsys.readouterr().err.rstrip().endswith(f"; {run} is running now: no trial of it has finished yet")
        (run / "results.parquet").write_bytes((tiny_results / "results.parquet").read_bytes())
        for location in (run, run.parent):
            assert main(["report", str(location), "--out", str(tmp_path / "report")]) == 0
            assert capsys.readouterr().out.splitlines()[-1] == (
                f"WARNING: {run} is running now (its driver holds .driver.lock): this report has only the trials "
                "finished so far; run it again when that run ends")
            assert "**" + str(run) + " is running now" in (tmp_path / "report" / "report.md").read_text()
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0  # the run ended
    assert "running now" not in capsys.readouterr().out


def test_compare_prints_one_pair(tiny_results, tmp_path, capsys):
    from analysis.__main__ import main

    assert main(["compare", str(tiny_results), "tiny-qwen3 / full", "tiny-qwen3 / zero-shot"]) == 0
    out = capsys.readouterr().out
    assert "paired p" in out and "verdict" in out and "WARNING" not in out
    results = pd.read_parquet(tiny_results / "results.parquet")
    for model in ("tiny-bert", "tiny-qwen3"):  # two stores, as a report of a study and its sweep reads them
        (tmp_path / model).mkdir()
        results[results["model"] == model].to_parquet(tmp_path / model / "results.parquet")
    assert main(["compare", str(tmp_path / "tiny-bert"), str(tmp_path / "tiny-qwen3"), "tiny-bert / full",
                 "tiny-qwen3 / full"]) == 0
    assert "A: tiny-bert / full" in capsys.readouterr().out
    (tmp_path / "fallback").mkdir()
    results.assign(tuning=results["tuning"].mask(results["method"] == "full", "untuned")).to_parquet(
        tmp_path / "fallback" / "results.parquet")
    assert main(["compare", str(tmp_path / "fallback"), "tiny-qwen3 / full", "tiny-qwen3 / zero-shot"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "WARNING: tiny-qwen3 / full ran untuned (--untuned-fallback): its tuning found no setting, so this "
        "compares it at its configured settings, not at its best")


def test_compare_names_one_method_or_says_why(tiny_results, capsys):
    from analysis.__main__ import main, resolve_method
    from analysis.load import ResultsError

    quick = ["minilm-l6 / full-lr5e-05", "minilm-l6 / lora-r8-attention", "minilm-l6 / lora-r8-attention+ffn",
             "tfidf / logreg"]
    assert resolve_method("full", quick) == "minilm-l6 / full-lr5e-05"  # the start of one variant
    assert resolve_method("lora-r8-attention", quick) == "minilm-l6 / lora-r8-attention"  # exact beats a start
    assert resolve_method("tfidf / logreg", quick) == "tfidf / logreg"
    with pytest.raises(ResultsError, match="'lora' matches 2 methods"):
        resolve_method("lora", quick)
    with pytest.raises(ResultsError, match="'ia3' is not among the successful methods"):
        resolve_method("ia3", quick)
    # two models both have `full`: the CLI refuses to pick one
    assert main(["compare", str(tiny_results), "full", "tiny-qwen3 / zero-shot"]) == 2
    assert "'full' matches 2 methods: ['tiny-bert / full', 'tiny-qwen3 / full']" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["empty", "other-schema", "only-failed"])
def test_bad_inputs_say_what_is_wrong(case, tmp_path, capsys):
    from analysis.__main__ import main

    if case == "other-schema":
        pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "results.parquet")
        expected = "not a sentisweep results table; missing columns"
    elif case == "only-failed":
        pd.DataFrame({"sweep": ["s"], "trial_id": ["m__full__s1"], "model": ["m"], "method": ["full"], "seed": [1],
                      "status": ["failed"], "accuracy": [None], "error": ["OutOfMemoryError: boom"]}
                     ).to_parquet(tmp_path / "results.parquet")
        expected = "no successful trial to analyse"
    else:
        expected = "no results.parquet or result.parquet inside"
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and (case != "only-failed" or "OutOfMemoryError: boom" in err)


def test_sensitivity_and_placement_plots(tmp_path):
    from analysis import plots

    rows = []
    for lr, placement, acc in [(1e-4, "attention", 0.80), (1e-3, "attention", 0.84),
                               (1e-4, "attention+ffn", 0.82), (1e-3, "attention+ffn", 0.86)]:
        rows.append({"model": "m", "method": "lora", "learning_rate": lr, "placement": placement,
                     "accuracy": acc, "lora_r": 8})
    ok = pd.DataFrame(rows)
    for png in (plots.lr_sensitivity(ok, tmp_path / "lr.png"), plots.placement(ok, tmp_path / "placement.png")):
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert plots.rank_sensitivity(ok, tmp_path / "rank.png") is None  # one rank: nothing to show
    # a method registered later (here "vera") is plotted by what its rows hold, not by its name
    ranks = pd.concat([ok, ok.assign(lora_r=16, accuracy=ok["accuracy"] + 0.01)]).assign(method="vera")
    assert plots.rank_sensitivity(ranks, tmp_path / "rank.png").read_bytes()[:4] == b"\x89PNG"
    assert plots.placement(ranks, tmp_path / "vera-placement.png") is not None


def test_optuna_study_plots(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from analysis import plots

    journal = tmp_path / "optuna.journal"  # as a search keeps it (sentisweep.layout.STUDY_JOURNAL)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(lambda t: -(t.suggest_float("lr", 1e-5, 1e-2, log=True) - 1e-3) ** 2
                   + t.suggest_int("r", 1, 8) * 1e-9, n_trials=6)
    made = plots.optuna_study(journal, tmp_path)
    assert sorted(p.name for p in made) == ["optuna_s_history.png", "optuna_s_importance.png"]


def test_a_multi_class_task_gets_its_confusion_counts_by_class_name(tmp_path):
    """Six classes (a question set): counts from the predictions, named by label_names (issue 35:
    the report drew no confusion figure for more than two classes and said nothing)."""
    import json

    from analysis.plots import confusion_counts, confusion_matrices

    names = ["abbr", "entity", "desc", "human", "loc", "num"]
    predictions = pd.DataFrame({"row_id": [f"test:{i}" for i in range(8)], "label": [0, 1, 2, 3, 4, 5, 5, 5],
                                "predicted": [0, 1, 2, 3, 4, 5, 4, 5]})
    predictions.to_parquet(tmp_path / "predictions.parquet")
    group = pd.DataFrame({"model": ["m"], "variant": ["full"],
                          "predictions_path": [str(tmp_path / "predictions.parquet")],
                          "config_json": [json.dumps({"data": {"label_names": names}})],
                          "tn": [None], "fp": [None], "fn": [None], "tp": [None]})
    counts, labels = confusion_counts(group)
    assert labels == names and counts.shape == (6, 6) and counts.trace() == 7 and counts[5, 4] == 1
    assert confusion_matrices(group, tmp_path / "confusion.png").is_file()


def test_example_predictions_name_the_classes_and_leave_out_texts_they_cannot_read(tmp_path):
    import json

    from analysis.report import examples

    pd.DataFrame({"row_id": ["test:0", "test:1"], "label": [0, 1], "predicted": [1, 1],
                  "probability": [0.9, 0.8]}).to_parquet(tmp_path / "predictions.parquet")
    ok = pd.DataFrame({"model": ["m"], "variant": ["full"], "predictions_path": [str(tmp_path / "predictions.parquet")],
                       "config_json": [json.dumps({"data": {"source": "some-org/not-here",
                                                            "label_names": ["negative", "positive"]}})]})
    frame, note = examples(ok)  # a Hub id offline: no download, no retries, one line instead of the texts
    assert "not on this machine" in note and "text" not in frame
    assert frame.iloc[0][["label", "predicted"]].tolist() == ["negative", "positive"]
