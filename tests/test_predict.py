"""Using the winner: predict, export (loaded by transformers.pipeline), and the web demo
driven by a real headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import not_installed, tiny_trial
from simcluster import free_ports

from sentisweep.config_load import parse_trial_config
from sentisweep.export import export
from sentisweep.predict import PredictError, load_selected, main, ranked_trials, read_texts, select_trial
from sentisweep.results import SCHEMA, write_results
from sentisweep.trial import onednn
from sentisweep.trial.data import DataError
from sentisweep.trial.run import run_trial

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["good great wonderful", "bad awful terrible boring", "a film"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, data_dir, cache_dir):
    """A results folder with two trained tiny trials (an adapter and a full model) and a zero-shot."""
    root = tmp_path_factory.mktemp("store")
    results = []
    for trial_id, model, method in (("a__lora__s7", "tiny-bert", "lora"), ("b__full__s7", "tiny-roberta", "full"),
                                    ("c__zero-shot__s7", "tiny-qwen3", "zero-shot")):
        raw = tiny_trial(model, method, data_dir, cache_dir, root / "trials" / trial_id, learning_rate=5e-3)
        raw["data"]["label_names"] = ["negative", "positive"]
        result = run_trial(parse_trial_config({**raw, "trial_id": trial_id, "sweep": "s"}))
        assert result.status == "ok", result.error
        results.append(result)
    write_results(results, root / "results.parquet")
    return root


@pytest.mark.unit
def test_a_checkpoint_s_weights_are_as_readable_as_its_config(store):
    # safetensors 0.8 saved them 0600 whatever the umask: another user could read config.json only
    checkpoints = list(store.glob("trials/*/checkpoint"))
    assert len(checkpoints) == 2
    for checkpoint in checkpoints:
        modes = {file.name: oct(file.stat().st_mode & 0o777) for file in checkpoint.iterdir()}
        assert len(set(modes.values())) == 1, modes


@pytest.mark.unit
def test_select_best_and_by_id(store):
    table = pd.read_parquet(store / "results.parquet")
    best = select_trial(table)
    assert best["method"] != "zero-shot"  # no checkpoint to load
    trained = table[table["method"] != "zero-shot"]
    assert best["best_val_accuracy"] == trained["best_val_accuracy"].max()  # chosen on validation, not test
    assert select_trial(table, metric="accuracy")["accuracy"] == trained["accuracy"].max()
    assert select_trial(table, "b__full__s7")["model"] == "tiny-roberta"
    with pytest.raises(PredictError, match="--select = 'nope': no such trial; use best or one of: a__lora__s7"):
        select_trial(table, "nope")
    with pytest.raises(PredictError, match="--metric = 'speed'"):
        select_trial(table, metric="speed")


@pytest.mark.unit
def test_a_better_trial_without_a_checkpoint_is_said_not_passed_over(store, capsys):
    table = pd.read_parquet(store / "results.parquet")
    trained = table[table["method"] != "zero-shot"]
    unkept = trained.iloc[[0]].assign(trial_id="unkept", checkpoint_path=None,
                                      best_val_accuracy=trained["best_val_accuracy"].max() + 0.01)
    with_unkept = pd.concat([table, unkept], ignore_index=True)
    assert select_trial(with_unkept)["trial_id"] == select_trial(table)["trial_id"]
    assert ("note: unkept scored better by best_val_accuracy but left no model to load here"
            in capsys.readouterr().err)
    with pytest.raises(PredictError, match="--select = 'unkept': that trial kept no model checkpoint"):
        select_trial(with_unkept, "unkept")


@pytest.mark.unit
def test_the_best_of_a_run_whose_driver_runs_now_is_said_to_be_so_far(store, capsys):
    import fcntl

    from sentisweep.predict import load_store

    with open(store / ".driver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the driver holds it while the run goes on
        load_store(store)
        assert f"note: {store} is running now (its driver holds .driver.lock)" in capsys.readouterr().err
    load_store(store)
    assert "running now" not in capsys.readouterr().err


@pytest.mark.unit
def test_the_demo_loads_the_best_first_and_says_what_predict_says(store, capsys, monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    from sentisweep import demo

    monkeypatch.setattr(demo, "Classifier", lambda checkpoint, cache_dir: checkpoint)  # what it would load
    table = pd.read_parquet(store / "results.parquet")
    trained = table[table["method"] != "zero-shot"]
    unkept = trained.iloc[[0]].assign(trial_id="unkept", checkpoint_path=None,
                                      best_val_accuracy=trained["best_val_accuracy"].max() + 0.01)
    pd.concat([table, unkept], ignore_index=True).to_parquet(tmp_path / "results.parquet")
    loaded = demo.load_trials(str(tmp_path), "best", "best_val_accuracy", 5)
    assert [row["trial_id"] for row, _ in loaded] == list(ranked_trials(table)["trial_id"])
    assert "note: unkept scored better by best_val_accuracy" in capsys.readouterr().err


@pytest.mark.unit
def test_a_tie_for_best_is_said_with_the_tied_trials(store, capsys):
    table = pd.read_parquet(store / "results.parquet")
    select_trial(table.assign(best_val_accuracy=[0.5 + 0.1 * i for i in range(len(table))]))
    assert "tie" not in capsys.readouterr().err
    tied = table.assign(best_val_accuracy=0.8467)
    best = select_trial(tied)
    others = ", ".join(t for t in tied["trial_id"] if t != best["trial_id"] and "zero-shot" not in t)
    said = capsys.readouterr().err
    assert f"best by best_val_accuracy (0.8467) is a tie of {best['trial_id']} with {others}; the first" in said


@pytest.mark.parametrize("trial_id", ["a__lora__s7", "b__full__s7"])
@pytest.mark.unit
def test_export_loads_in_pipeline_with_the_same_probabilities(store, tmp_path, trial_id, capsys, monkeypatch):
    from transformers import pipeline

    monkeypatch.setattr(onednn, "faster_here", lambda: onednn.available())  # packs on any CPU
    row, classifier = load_selected(store, trial_id)
    ours = classifier.predict(TEXTS)  # with oneDNN-packed linears; the pipeline below runs torch's own
    packed = any(type(m).__name__ == "PackedLinear" for m in classifier.model.modules())
    assert classifier.packed == packed == onednn.available()
    previous = os.umask(0o022)
    try:
        folder = export(str(store), tmp_path / "model", select=trial_id)
    finally:
        os.umask(previous)
    assert list(folder.glob("*.safetensors")) and (folder / "tokenizer.json").is_file()
    assert folder.stat().st_mode & 0o777 == 0o755  # mkdtemp's 0700 hid an export from other users
    assert {oct(f.stat().st_mode & 0o777) for f in folder.iterdir()} == {"0o644"}  # safetensors' 0600 too
    scores = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")(TEXTS)
    for i, answer in enumerate(scores):
        by_label = {s["label"]: s["score"] for s in answer}
        assert set(by_label) == {"negative", "positive"}
        assert by_label["positive"] == pytest.approx(ours.loc[i, "probability_positive"], abs=1e-5)
    with pytest.raises(PredictError, match="exists and is not empty; pass --overwrite"):
        export(str(store), folder, select=trial_id)
    from sentisweep.export import main as export_main

    assert export_main(["--results", str(store), "--select", trial_id, "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'next, without sentisweep: transformers.pipeline("text-classification", model="{tmp_path / "cli"}")')


@pytest.mark.unit
def test_predict_cli_texts_and_batch_file(store, tmp_path, capsys):
    assert main(["--results", str(store), "--select", "a__lora__s7", *TEXTS]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.split()[0] in ("NEGATIVE", "POSITIVE") for line in lines)
    pd.DataFrame({"review": TEXTS * 30}).to_csv(tmp_path / "in.csv", index=False)
    assert main(["--results", str(store), "--input", str(tmp_path / "in.csv"), "--text-column", "review",
                 "--output", str(tmp_path / "out.parquet")]) == 0
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) == 90 and list(out["text"]) == TEXTS * 30  # input order, though batches are length-sorted
    assert np.allclose(out["probability_negative"] + out["probability_positive"], 1.0)
    again = ["--results", str(store), "--select", "b__full__s7", "--output", str(tmp_path / "out.parquet"), "ok"]
    assert main(again) == 2  # the earlier predictions stay
    assert "out.parquet' exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert pd.read_parquet(tmp_path / "out.parquet").equals(out)
    assert main([*again, "--overwrite"]) == 0 and len(pd.read_parquet(tmp_path / "out.parquet")) == 1
    assert main([*again[:-2], str(tmp_path / "new" / "out.csv"), "ok"]) == 0  # pandas' CSV writer made no folder
    assert len(pd.read_csv(tmp_path / "new" / "out.csv")) == 1
    (tmp_path / "folder.parquet").mkdir()  # a traceback from the rename, after the model ran
    assert main(["--results", str(store), "--output", str(tmp_path / "folder.parquet"), "--overwrite", "ok"]) == 2
    assert "folder.parquet' is a folder; give a file in it" in capsys.readouterr().err


@pytest.mark.unit
def test_bad_inputs_are_clear(store, tmp_path, capsys):
    assert main(["--results", str(store), "ok", "  "]) == 2
    assert "text 2 of 2 is empty" in capsys.readouterr().err
    assert main(["--results", str(tmp_path / "none"), "ok"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(PredictError, match="no column 'text'; columns: \\['review'\\]"):
        pd.DataFrame({"review": ["x"]}).to_csv(tmp_path / "r.csv", index=False)
        read_texts(tmp_path / "r.csv")
    for first, second in (("Great.", "Awful, boring."), ("Great movie, loved it.", "Dull.")):
        # the second pair: pandas took 'Great movie' as an index and ' loved it.' as the text
        (tmp_path / "unquoted.csv").write_text(f"text\n{first}\n{second}\n")
        with pytest.raises(DataError, match="unquoted.csv': not a readable csv file .*must be quoted"):
            read_texts(tmp_path / "unquoted.csv")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="broken.parquet': not a readable parquet file \\(.*\\)$"):
        read_texts(tmp_path / "broken.parquet")
    (tmp_path / "texts.xlsx").write_text("x")
    with pytest.raises(PredictError, match="unknown format '.xlsx'; allowed: .txt \\(one text a line\\), .parquet"):
        read_texts(tmp_path / "texts.xlsx")
    (tmp_path / "blank.csv").write_text("text,id\nGreat.,1\n,2\n")
    assert read_texts(tmp_path / "blank.csv") == ["Great.", ""]  # so check_texts names text 2 as empty
    failed = pd.read_parquet(store / "results.parquet").assign(status="failed")
    failed[SCHEMA.names].to_parquet(tmp_path / "failed.parquet")
    assert main(["--results", str(tmp_path / "failed.parquet"), "ok"]) == 2
    assert "no trial in these results finished ok" in capsys.readouterr().err
    gone = pd.read_parquet(store / "results.parquet").assign(checkpoint_path=str(tmp_path / "deleted"))
    gone.to_parquet(tmp_path / "gone.parquet")
    assert main(["--results", str(tmp_path / "gone.parquet"), "--select", "a__lora__s7", "ok"]) == 2
    assert "is missing or is not a model folder" in capsys.readouterr().err


@pytest.mark.integration
def test_demo_in_a_headless_browser(store, tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        not_installed("Debian's chromium and chromium-driver (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    [port] = free_ports(1)
    demo = subprocess.Popen([sys.executable, "-m", "sentisweep.demo", "--results", str(store), "--top-k", "2",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1000"):
        options.add_argument(flag)
    browser = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                if demo.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"demo did not start: {demo.stdout.read()[-3000:]}") from None
                time.sleep(0.5)
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        box = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#review textarea"))
        box.send_keys("good great wonderful, a film I loved")
        browser.find_element(By.CSS_SELECTOR, "#classify").click()
        answer = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#answered-by").text.strip() or None)
        browser.save_screenshot(str(tmp_path / "demo.png"))
        assert "answered by trial" in answer and ("POSITIVE" in answer or "NEGATIVE" in answer), answer
        label = browser.find_element(By.CSS_SELECTOR, "#label").text
        assert "POSITIVE" in label and "NEGATIVE" in label  # both classes with their confidences
        assert (tmp_path / "demo.png").stat().st_size > 10_000
        if os.environ.get("SENTISWEEP_SCREENSHOT_DIR"):  # to look at it after the run
            shutil.copy(tmp_path / "demo.png", Path(os.environ["SENTISWEEP_SCREENSHOT_DIR"]) / "demo.png")
        from gradio_client import Client  # the page's API, as the README shows it

        confidences, answered_by, _ = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            "good great wonderful, a film I loved", api_name="/classify")
        assert answered_by.replace("**", "") == answer  # the page's answer, in Markdown
        assert {c["label"] for c in confidences["confidences"]} == {"POSITIVE", "NEGATIVE"}
    finally:
        if browser is not None:
            browser.quit()
        demo.terminate()
        demo.wait(timeout=30)
