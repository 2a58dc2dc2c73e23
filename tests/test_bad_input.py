"""Every entry point, given bad input as a new user would: exit 2 before any expensive work,
one message naming the field and the value, and nothing that already existed changed.

Each command runs in this process through its `main(argv)` (what `python ...` calls), so the
cases take seconds together; tests/test_cli.py runs the same refusals as typed, in a subprocess."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import separable, synthetic_reviews, tiny_trial, write_split

from sentisweep import exit_codes
from sentisweep.config_load import parse_trial_config
from sentisweep.results import write_results
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def _yaml(path: Path, config: dict, command: str) -> None:
    path.write_text(f"# {command}\n" + yaml.safe_dump(config))


@pytest.fixture(scope="module")
def world(tmp_path_factory, cache_dir) -> Path:
    """What a user already has: data, a results store with a trained trial, an export,
    embeddings, config files. The cases must leave every byte of it as it was."""
    w = tmp_path_factory.mktemp("world")
    ok = w / "data" / "ok"
    ok.mkdir(parents=True)
    synthetic_reviews(80, 1).to_parquet(ok / "train.parquet")
    synthetic_reviews(24, 2).to_parquet(ok / "test.parquet")
    three = w / "data" / "three"
    three.mkdir()
    synthetic_reviews(60, 3).assign(label=lambda f: np.arange(len(f)) % 3).to_parquet(three / "train.parquet")
    empty = w / "data" / "empty"
    empty.mkdir()
    synthetic_reviews(20, 4).assign(text="  ").to_parquet(empty / "train.parquet")
    no_labels = w / "data" / "no_labels"
    no_labels.mkdir()
    synthetic_reviews(20, 5).assign(label=np.nan).to_parquet(no_labels / "train.parquet")
    truncated = w / "data" / "truncated"
    truncated.mkdir()
    (truncated / "train.parquet").write_bytes((ok / "train.parquet").read_bytes()[:200])

    store = w / "store" / "s"
    raw = tiny_trial("tiny-bert", "lora", ok, cache_dir, store / "trials" / "t1")
    result = run_trial(parse_trial_config({**raw, "trial_id": "t1", "sweep": "s"}))
    assert result.status == "ok", result.error
    write_results([result], store / "results.parquet")
    (w / "exported").mkdir()
    (w / "exported" / "model.safetensors").write_bytes(b"an earlier export")
    (w / "a_file.txt").write_text("not a folder")
    for split, (n, seed) in {"train": (40, 1), "validation": (20, 2), "test": (20, 3)}.items():
        write_split(w / "emb", split, *separable(n, seed))

    (w / "empty.yaml").write_text("# python sweeps/ablation.py --config empty.yaml\n")
    smoke = yaml.safe_load((ROOT / "sweeps" / "configs" / "smoke.yaml").read_text())
    smoke["data"]["source"] = str(ok)
    smoke["data"]["cache_dir"] = str(cache_dir)
    for name, change in {
        "twice": {"models": ["tiny-bert", "tiny-bert"]},
        "long": {"training": {**smoke["training"], "max_length": 1024}},
        "escape": {"name": "../escape"},
        "nodata": {"data": {**smoke["data"], "source": str(w / "nowhere")}},
        "labels3": {"data": {**smoke["data"], "label_names": ["a", "b", "c"]}},
        "qlora_fp16": {"methods": ["qlora"], "training": {**smoke["training"], "precision": "fp16"}},
    }.items():
        _yaml(w / f"sweep_{name}.yaml", {**smoke, **change}, f"python sweeps/ablation.py --config sweep_{name}.yaml")
    search = yaml.safe_load((ROOT / "sweeps" / "configs" / "search_smoke.yaml").read_text())
    search["data"]["source"] = str(ok)
    _yaml(w / "search_ok.yaml", search, "python sweeps/search.py --config search_ok.yaml")
    _yaml(w / "search_labels3.yaml", {**search, "data": {**search["data"], "label_names": ["a", "b", "c"]}},
          "python sweeps/search.py --config search_labels3.yaml")
    _yaml(w / "search_ia3.yaml", {**search, "method": "ia3"}, "python sweeps/search.py --config search_ia3.yaml")
    _yaml(w / "search_rank0.yaml", {**search, "space": {**search["space"], "r": [0, 4]}},
          "python sweeps/search.py --config search_rank0.yaml")
    study = yaml.safe_load((ROOT / "sweeps" / "configs" / "embed_xgb_smoke.yaml").read_text())
    _yaml(w / "study_escape.yaml", {**study, "name": "../escape"}, "python ray_jobs/embed_xgb.py")
    _yaml(w / "study_pooling.yaml", {**study, "models": [{"model": "tiny-bert", "pooling": "last"}]},
          "python ray_jobs/embed_xgb.py")
    _yaml(w / "study_no_data.yaml", {**study, "models": [{"model": "tiny-bert"}], "storage": str(w / "study_store"),
                                      "data": {**study["data"], "source": str(w / "nowhere")}},
          "python ray_jobs/embed_xgb.py")
    (w / "no_texts.csv").write_text("text\n")  # a header, and no row under it
    (w / "results_dir").mkdir()  # where a finished sweep's table already is
    (w / "results_dir" / "smoke").mkdir()
    (w / "results_dir" / "smoke" / "results.parquet").write_bytes(b"a finished sweep's table")
    return w


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


TRAIN, SWEEP, SEARCH = "sentisweep.train", "sweeps.ablation", "sweeps.search"
EMBED, XGB, STUDY = "ray_jobs.embed", "ray_jobs.xgboost_stage", "ray_jobs.embed_xgb"
PREDICT, EXPORT, ANALYSIS, DEMO = "sentisweep.predict", "sentisweep.export", "analysis.__main__", \
    "sentisweep.demo"
TINY = ["--model", "tiny-bert", "--data", "{w}/data/ok", "--max-steps", "2", "--out", "{w}/new_trial"]

# (command, argv, what the message must say: the field and the value)
CASES = {
    "train: unknown model": (TRAIN, ["--model", "gpt-9", "--out", "{w}/x"], ["model = 'gpt-9': unknown"]),
    "train: misspelt method": (TRAIN, [*TINY, "--method", "lorra"], ["'lorra': unknown; did you mean 'lora'"]),
    "train: batch size 0": (TRAIN, [*TINY, "--batch-size", "0"], ["training.batch_size = 0"]),
    "train: infinite epochs": (TRAIN, [*TINY, "--epochs", "inf"], ["training.epochs = inf"]),
    "train: past the position limit": (TRAIN, [*TINY, "--max-length", "1024"],
                                       ["training.max_length = 1024", "at most 512"]),
    "train: placement word": (TRAIN, [*TINY, "--method", "lora", "--placement", "attn"],
                              ["method.placement = 'attn'", "allowed: attention"]),
    "train: module name it lacks": (TRAIN, [*TINY, "--method", "lora", "--placement", "query,q_proj"],
                                    ["method.placement = ['query', 'q_proj']", "['q_proj'] match no"]),
    "train: rank 0": (TRAIN, [*TINY, "--method", "lora", "--r", "0"], ["method.r = 0"]),
    "train: no such data": (TRAIN, [*TINY[:2], "--data", "./nowhere", "--out", "{w}/x"],
                            ["data.source = './nowhere': no such file or folder"]),
    "train: --out is a file": (TRAIN, [*TINY[:-1], "{w}/a_file.txt"], ["--out = '{w}/a_file.txt': a file"]),
    "train: --out finished": (TRAIN, [*TINY[:-1], "{w}/store/s/trials/t1"], ["result.parquet exists"]),
    "train: empty config": (TRAIN, ["--config", "{w}/empty.yaml"], ["empty.yaml", "empty; state at least"]),
    "train: a search config": (TRAIN, ["--config", "{w}/search_ok.yaml"], ["kind = 'search'", "not a trial"]),
    "train: precision": (TRAIN, [*TINY, "--precision", "int3"], ["--precision", "'int3'"]),
    "train: three classes for two": (TRAIN, [*TINY[:2], "--data", "{w}/data/three", "--out", "{w}/x"],
                                     ["data.label_column = 'label'", "3 classes", "num_labels = 2"]),
    "train: text column": (TRAIN, [*TINY, "--text-column", "review"], ["lacks column(s) ['review']"]),
    "train: truncated parquet": (TRAIN, [*TINY[:2], "--data", "{w}/data/truncated", "--out", "{w}/x"],
                                 ["train.parquet is not a readable Parquet file"]),
    "train: every text empty": (TRAIN, [*TINY[:2], "--data", "{w}/data/empty", "--out", "{w}/x"],
                                ["every text is empty"]),
    "train: every label empty": (TRAIN, [*TINY[:2], "--data", "{w}/data/no_labels", "--out", "{w}/x"],
                                 ["data.label_column = 'label': every label", "is empty"]),
    "sweep: no such config": (SWEEP, ["--config", "{w}/missing.yaml"], ["config file = '{w}/missing.yaml'"]),
    "sweep: empty config": (SWEEP, ["--config", "{w}/empty.yaml"], ["empty.yaml", "empty"]),
    "sweep: storage is a file": (SWEEP, ["--config", "sweeps/configs/smoke.yaml", "--storage", "{w}/a_file.txt"],
                                 ["--storage = '{w}/a_file.txt'", "a file, not a folder"]),
    # a storage it cannot write to: said before Ray starts (a pyarrow traceback after tokenizing, before)
    "sweep: storage under a file": (SWEEP, ["--config", "sweeps/configs/smoke.yaml", "--storage",
                                            "{w}/a_file.txt/results"], ["--storage: cannot write to {w}/a_file.txt/"]),
    "sweep: gpu memory 0": (SWEEP, ["--config", "sweeps/configs/smoke.yaml", "--gpu-memory", "0", "--dry-run"],
                            ["argument --gpu-memory: 0: must be above 0"]),
    "search: wait for nodes below 0": (SEARCH, ["--dry-run", "--wait-for-nodes", "-3"],
                                       ["argument --wait-for-nodes: -3: must be at least 0"]),
    "sweep: a model twice": (SWEEP, ["--config", "{w}/sweep_twice.yaml"], ["models = ['tiny-bert', 'tiny-bert']"]),
    "sweep: max concurrent 0": (SWEEP, ["--config", "sweeps/configs/smoke.yaml", "--max-concurrent", "0"],
                                ["resources.max_concurrent = 0"]),
    "sweep: past the position limit": (SWEEP, ["--config", "{w}/sweep_long.yaml"], ["training.max_length = 1024"]),
    "sweep: name escapes storage": (SWEEP, ["--config", "{w}/sweep_escape.yaml"], ["name = '../escape'"]),
    "sweep: no such data": (SWEEP, ["--config", "{w}/sweep_nodata.yaml", "--dry-run"],
                            ["data.source = '{w}/nowhere': no such file or folder"]),
    # the dry run refuses what the real run would, data included (issue 35)
    "sweep: dry run, 3 names for 2 classes": (SWEEP, ["--config", "{w}/sweep_labels3.yaml", "--dry-run"],
                                              ["data.label_names = ['a', 'b', 'c']: 3 names for 2 classes"]),
    "search: dry run, 3 names for 2 classes": (SEARCH, ["--config", "{w}/search_labels3.yaml", "--dry-run"],
                                               ["data.label_names = ['a', 'b', 'c']: 3 names for 2 classes"]),
    "sweep: a search config": (SWEEP, ["--config", "{w}/search_ok.yaml"], ["kind = 'search'", "sweeps/search.py"]),
    "sweep: dry run where it finished": (SWEEP, ["--config", "sweeps/configs/smoke.yaml", "--dry-run", "--storage",
                                                "{w}/results_dir"], ["a finished run is there"]),
    "search: 0 samples": (SEARCH, ["--config", "{w}/search_ok.yaml", "--num-samples", "0"], ["num_samples = 0"]),
    "search: storage is a file": (SEARCH, ["--config", "{w}/search_ok.yaml", "--storage", "{w}/a_file.txt"],
                                  ["--storage = '{w}/a_file.txt'", "a file, not a folder"]),
    "search: storage under a file": (SEARCH, ["--config", "{w}/search_ok.yaml", "--storage", "{w}/a_file.txt/results"],
                                     ["--storage: cannot write to {w}/a_file.txt/"]),
    "search: method without rank": (SEARCH, ["--config", "{w}/search_ia3.yaml"],
                                    ["method = 'ia3'", "allowed: dora, lora, qlora"]),
    "search: rank 0": (SEARCH, ["--config", "{w}/search_rank0.yaml"], ["space.r.0 = 0", "greater than 0"]),
    "embed: unknown model": (EMBED, ["--model", "gpt-9", "--out", "{w}/emb2"], ["'gpt-9': unknown"]),
    "embed: batch size 0": (EMBED, ["--smoke-test", "--out", "{w}/emb2", "--batch-size", "0"], ["--batch-size = 0"]),
    "embed: unknown split": (EMBED, ["--smoke-test", "--out", "{w}/emb2", "--splits", "dev"], ["--splits = 'dev'"]),
    "embed: would overwrite": (EMBED, ["--smoke-test", "--out", "{w}/emb"], ["{w}/emb/train.parquet", "--overwrite"]),
    "embed: rows per call": (EMBED, ["--smoke-test", "--out", "{w}/emb2", "--rows-per-call", "2"],
                             ["--rows-per-call = 2"]),
    "embed: pooling for a decoder": (EMBED, ["--model", "tiny-qwen3", "--pooling", "cls", "--out", "{w}/emb2"],
                                     ["pooling = 'cls'", "allowed: mean, last"]),
    "embed: no such data": (EMBED, ["--model", "tiny-bert", "--data", "{w}/nowhere", "--out", "{w}/emb2"],
                            ["--data = '{w}/nowhere': no such file or folder"]),
    "xgboost: no embeddings": (XGB, ["--embeddings", "{w}/nowhere"], ["embeddings = '{w}/nowhere'"]),
    "xgboost: name escapes storage": (XGB, ["--embeddings", "{w}/emb", "--name", "../../escape", "--workers", "0",
                                           "--storage", "{w}/xgb"], ["--name = '../../escape'"]),
    "xgboost: negative workers": (XGB, ["--embeddings", "{w}/emb", "--workers", "-1", "--storage", "{w}/xgb"],
                                  ["--workers = -1"]),
    "xgboost: depth 0": (XGB, ["--embeddings", "{w}/emb", "--max-depth", "0", "--workers", "0"], ["max_depth"]),
    "study: name escapes storage": (STUDY, ["--config", "{w}/study_escape.yaml"], ["name = '../escape'"]),
    "study: pooling": (STUDY, ["--config", "{w}/study_pooling.yaml"], ["models[0].pooling = 'last'"]),
    "study: no such data": (STUDY, ["--config", "{w}/study_no_data.yaml"],
                            ["data.source = '{w}/nowhere': no such file or folder"]),
    "predict: no such results": (PREDICT, ["--results", "{w}/nowhere", "hello"], ["--results = '{w}/nowhere'"]),
    "predict: no such trial": (PREDICT, ["--results", "{w}/store/s", "--select", "nope", "hi"], ["--select = 'nope'"]),
    "predict: cuda without a GPU": (PREDICT, ["--results", "{w}/store/s", "--device", "cuda", "hi"],
                                    ["--device = 'cuda'", "no CUDA GPU"]),
    "predict: batch size 0": (PREDICT, ["--results", "{w}/store/s", "--batch-size", "0", "hi"], ["--batch-size = 0"]),
    "predict: output format": (PREDICT, ["--results", "{w}/store/s", "--output", "{w}/p.txt", "hi"],
                               ["--output = '{w}/p.txt'"]),
    "predict: metric": (PREDICT, ["--results", "{w}/store/s", "--metric", "nope", "hi"], ["--metric = 'nope'"]),
    "export: into the results": (EXPORT, ["--results", "{w}/store/s", "--out", "{w}/store/s", "--overwrite"],
                                 ["--out = '{w}/store/s'", "--results"]),
    "export: above the results": (EXPORT, ["--results", "{w}/store/s", "--out", "{w}/store", "--overwrite"],
                                  ["--out = '{w}/store'", "--results"]),
    "export: out is a file": (EXPORT, ["--results", "{w}/store/s", "--out", "{w}/a_file.txt"],
                              ["--out = '{w}/a_file.txt': a file"]),
    "export: would overwrite": (EXPORT, ["--results", "{w}/store/s", "--out", "{w}/exported"],
                                ["--out = '{w}/exported' exists and is not empty"]),
    "report: no such results": (ANALYSIS, ["report", "{w}/nowhere", "--out", "{w}/rep"], ["{w}/nowhere: no such"]),
    "report: out is a file": (ANALYSIS, ["report", "{w}/store/s", "--out", "{w}/a_file.txt"],
                              ["--out = '{w}/a_file.txt': a file"]),
    "predict: an input with no texts": (PREDICT, ["--results", "{w}/store/s", "--input", "{w}/no_texts.csv"],
                                        ["--input = '{w}/no_texts.csv': holds no texts"]),
    "report: within below 0": (ANALYSIS, ["report", "{w}/store/s", "--out", "{w}/rep", "--within", "-1"],
                               ["--within = -1: must be 0 or more"]),
    "compare: a method with itself": (ANALYSIS, ["compare", "{w}/store/s", "lora", "tiny-bert / lora"],
                                      ["'lora' and 'tiny-bert / lora' are both 'tiny-bert / lora'"]),
    "compare: unknown method": (ANALYSIS, ["compare", "{w}/store/s", "lora", "nope"], ["'nope' is not among"]),
    "demo: top k 0": (DEMO, ["--results", "{w}/store/s", "--top-k", "0"], ["--top-k = 0"]),
}


def run_main(command: str, argv: list[str]) -> int:
    try:
        return importlib.import_module(command).main(argv)
    except SystemExit as done:  # argparse's own refusals
        return done.code


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_exits_2_names_field_and_value_and_changes_nothing(case, world, capsys, monkeypatch):
    command, argv, expected = CASES[case]
    if command == DEMO:
        pytest.importorskip("gradio")
    monkeypatch.chdir(ROOT)  # the shipped configs' relative paths, as a user in the checkout
    import ray

    def refuse(*args, **kwargs):  # bad input is said before Ray starts (a data source was said after)
        raise AssertionError("bad input started Ray")

    monkeypatch.setattr(ray, "init", refuse)
    before = snapshot(world)
    code = run_main(command, [a.replace("{w}", str(world)) for a in argv])
    err = capsys.readouterr().err
    assert code == exit_codes.BAD_INPUT, err[-2000:]
    for text in expected:
        assert text.replace("{w}", str(world)) in err, err[-2000:]
    assert snapshot(world) == before
    assert not (world.parent / "escape").exists()


def test_the_dry_run_says_what_a_cpu_cannot_run(world, capsys, monkeypatch):
    """qlora with fp16 on CPU: every trial would be skipped, and the dry run says so."""
    monkeypatch.chdir(ROOT)
    assert run_main(SWEEP, ["--config", str(world / "sweep_qlora_fp16.yaml"), "--dry-run",
                            "--storage", str(world / "dry")]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "4 trials: 0 to run, 4 skipped" in out and "half precision is for CUDA" in out


def test_cases_cover_every_entry_point():
    assert len(CASES) >= 40
    assert {command for command, _, _ in CASES.values()} == {TRAIN, SWEEP, SEARCH, EMBED, XGB, STUDY, PREDICT,
                                                              EXPORT, ANALYSIS, DEMO}


def test_report_counts_every_adhoc_trial(world, tmp_path, cache_dir):
    """Four one-off trials of one model and method at four learning rates in one folder are four
    trials, not one (their ids differ by a hash of their settings)."""
    from sentisweep.results import read_results

    for i, lr in enumerate((1e-4, 3e-4, 1e-3, 3e-3)):
        raw = tiny_trial("tiny-bert", "head-only", world / "data" / "ok", cache_dir, tmp_path / f"run{i}",
                         learning_rate=lr, max_steps=1)
        assert run_trial(parse_trial_config(raw)).status == "ok"
    from analysis.load import load_results

    assert len(read_results(tmp_path)) == 4 and len(load_results([tmp_path])) == 4
    assert pd.Series(read_results(tmp_path)["trial_id"]).is_unique


def test_the_main_command_offline_without_a_mirror_is_one_line(capsys, monkeypatch, tmp_path):
    """A clone with no ../shared beside it and no Hub: `python sweeps/ablation.py --dry-run`
    (the quick config, data `imdb`) stops at the data step and says what to set."""
    import datasets

    def offline(source, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{source}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.delenv("SENTISWEEP_DATA_MIRROR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset_builder", offline)
    monkeypatch.chdir(ROOT)
    assert run_main(SWEEP, ["--dry-run", "--storage", str(tmp_path)]) == exit_codes.BAD_INPUT
    captured = capsys.readouterr()
    assert "6 trials: 6 to run" in captured.out  # the matrix came first
    (line,) = [line for line in captured.err.splitlines() if line.strip()]
    assert line.startswith("error: data.source = 'imdb': not in a local mirror") and "SENTISWEEP_DATA_MIRROR" in line


def test_ctrl_c_of_the_embedding_study_says_that_the_same_command_continues(capsys, monkeypatch, tmp_path):
    """The study keeps each embedding and row as it finishes, and running it again continues;
    a Ctrl-C ended in a bare "interrupted" (walked on the quick study, 2026-12-07)."""
    from ray_jobs import embed_xgb

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(embed_xgb, "run_stages", ctrl_c)
    config = tmp_path / "study.yaml"
    _yaml(config, {"kind": "embed_xgb", "name": "study", "models": [{"model": "tiny-bert"}],
                   "data": {"source": str(ROOT / "data" / "tiny_reviews")}},
          f"python ray_jobs/embed_xgb.py --config {config}")
    assert embed_xgb.main(["--config", str(config), "--storage", str(tmp_path)]) == exit_codes.INTERRUPTED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("interrupted: the same command continues: the embeddings and rows finished in "
                    f"{tmp_path}/study are kept")


def test_the_embedding_study_runs_under_its_lock_and_a_second_driver_is_refused(capsys, monkeypatch, tmp_path):
    """Two drivers of one study (a job sent again while the first runs) embedded and fitted the
    same runs twice over the same files; the study takes the sweeps' driver lock."""
    from ray_jobs import embed_xgb
    from ray_session.guard import running_now
    from sentisweep.storage import Store

    config = tmp_path / "study.yaml"
    _yaml(config, {"kind": "embed_xgb", "name": "study", "models": [{"model": "tiny-bert"}],
                   "data": {"source": str(ROOT / "data" / "tiny_reviews")}},
          f"python ray_jobs/embed_xgb.py --config {config}")
    argv = ["--config", str(config), "--storage", str(tmp_path)]

    def a_second_driver(*args):
        assert running_now(Store(str(tmp_path)), "study")  # held while the stages run
        assert embed_xgb.main(argv) == exit_codes.BAD_INPUT
        assert embed_xgb.main([*argv, "--dry-run"]) == exit_codes.BAD_INPUT
        return False

    monkeypatch.setattr(embed_xgb, "run_stages", a_second_driver)
    assert embed_xgb.main(argv) == exit_codes.BAD_INPUT  # no stage ran, so no results table to print
    refusals = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")][:2]
    assert refusals == [f"error: {tmp_path}/study is running now: another driver holds {tmp_path}/study/"
                        ".driver.lock; wait for it, or stop it (Ctrl-C, `ray job stop`) before running it again"] * 2
    assert running_now(Store(str(tmp_path)), "study") is None  # let go when the driver ended


def test_a_study_redone_under_another_seed_keeps_one_row_per_embeddings(tmp_path):
    """`--overwrite` after the seed changed wrote the new seed's row beside the old one (another
    trial id), and the report counted both."""
    from ray_jobs.embed_xgb import drop_earlier_rows
    from sentisweep.storage import Store

    def row(trial_id, embeddings):
        return {"trial_id": trial_id,
                "method_params": json.dumps({"embeddings": embeddings, "checkpoint": "pretrained"})}

    store = Store(str(tmp_path))
    store.write_frame(pd.DataFrame([row("a__s42", "e/a"), row("b__s42", "e/b"), row("a__s43", "e/a")]),
                      "study", "results.parquet")
    run = {"embeddings": "e/a", "checkpoint": None}
    drop_earlier_rows(store, "study", run, "a__s43")
    assert list(store.read_frame("study", "results.parquet")["trial_id"]) == ["b__s42", "a__s43"]
