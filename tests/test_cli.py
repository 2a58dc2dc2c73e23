"""`python -m sentisweep.train` as a user types it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import default_sigint

pytestmark = pytest.mark.integration  # each test runs the command in a subprocess


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sentisweep.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_explains():
    out = _run("--help")
    assert out.returncode == 0
    for text in ["--train-size", "--placement", "exit status", "qlora", "minilm-l6"]:
        assert text in out.stdout


def test_one_trial_end_to_end_then_refuses_to_overwrite(data_dir, cache_dir, tmp_path):
    args = ["--model", "tiny-distilbert", "--method", "lora", "--r", "4", "--placement", "q_lin,v_lin",
            "--data", str(data_dir), "--train-size", "32", "--eval-size", "16", "--test-size", "16",
            "--max-length", "32", "--max-steps", "2", "--batch-size", "8", "--cache-dir", str(cache_dir),
            "--out", str(tmp_path / "t"), "--quiet"]
    out = _run(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test accuracy" in out.stdout and "samples/s" in out.stdout and "peak memory" in out.stdout
    # no --lr: the default 2e-5 is said at the start and on the last screen
    assert out.stdout.count("WARNING: learning rate 2e-5 is below lora's usual range (1e-4 to 5e-3") == 2
    assert out.stdout.rstrip().splitlines()[-1].startswith("WARNING: learning rate")
    row = pd.read_parquet(tmp_path / "t" / "result.parquet").iloc[0]
    assert row["status"] == "ok" and row["placement"] == "q_lin,v_lin" and row["lora_r"] == 4
    again = _run(*args)
    assert again.returncode == 2 and "exists" in again.stderr


def test_bad_config_exits_2_before_any_work(tmp_path):
    out = _run("--model", "nope", "--method", "lora", "--r", "0", "--out", str(tmp_path / "x"))
    assert out.returncode == 2
    assert "model = 'nope'" in out.stderr and "method.r = 0" in out.stderr
    assert not (tmp_path / "x").exists() and "Traceback" not in out.stderr


def test_skipped_trial_exit_code(data_dir, cache_dir, tmp_path):
    out = _run("--model", "tiny-bert", "--method", "zero-shot", "--data", str(data_dir), "--test-size", "8",
               "--cache-dir", str(cache_dir), "--out", str(tmp_path / "z"), "--quiet")
    assert out.returncode == 3 and "skipped" in out.stdout


@pytest.mark.parametrize("earlier", [False, True], ids=["new folder", "over an earlier trial"])
def test_ctrl_c_ends_in_one_line_and_leaves_what_was_there(earlier, data_dir, cache_dir, tmp_path):
    out = tmp_path / "t"
    common = ["--model", "tiny-bert", "--data", str(data_dir), "--max-length", "32", "--batch-size", "2",
              "--cache-dir", str(cache_dir), "--out", str(out), "--quiet"]
    if earlier:
        assert _run(*common, "--method", "head-only", "--max-steps", "1").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} if earlier else None
    # its own process group, as a terminal's Ctrl-C reaches it (a background job ignores SIGINT)
    trial = subprocess.Popen([sys.executable, "-m", "sentisweep.train", *common, "--method", "full",
                              "--max-steps", "100000", "--overwrite"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 240
    while not (out / "trainer").exists() and time.monotonic() < deadline:  # training has started
        time.sleep(0.2)
    time.sleep(1)
    trial.send_signal(signal.SIGINT)
    _, err = trial.communicate(timeout=120)
    assert trial.returncode == 130, err[-2000:]
    assert "interrupted: nothing was written" in err and "Traceback" not in err
    if earlier:  # the earlier trial's files are back, byte for byte, and nothing beside them
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
        assert not (out / "trainer").exists()
    else:
        assert not out.exists()
    assert not any(p.name.endswith(".replaced") for p in tmp_path.iterdir())
