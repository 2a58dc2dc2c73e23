"""Every location a command hands on is pinned in the driver (sentisweep/locations.py): a URI
as given, a local path absolute against where the command ran, and under `ray job submit` a
relative output refused before anything runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sentisweep.config import ConfigError, DataConfig
from sentisweep.locations import RAY_JOB_VARIABLE, pin_args, pinned, pinned_data, pinned_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("given, expected", [
    ("results", "{cwd}/results"),
    ("./out/x", "{cwd}/out/x"),
    ("/abs/results", "/abs/results"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("postgresql://u:p@host/db", "postgresql://u:p@host/db"),
    ("sqlite:///mlflow.db", "sqlite:///{cwd}/mlflow.db"),
    ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_a_location_means_what_it_meant_where_it_was_typed(given, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pinned(given) == expected.format(cwd=tmp_path.resolve())


def test_the_driver_pins_every_location_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emb").mkdir()
    args = argparse.Namespace(storage="results", study_storage="sqlite:///study.db", mlflow_uri=None,
                              embeddings="emb", data="imdb", local=True)
    pin_args(args)
    assert args.storage == str(tmp_path.resolve() / "results")
    assert args.study_storage == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert args.embeddings == str(tmp_path.resolve() / "emb")
    assert args.data == "imdb"  # a dataset id, not a path: as typed


def test_under_ray_job_submit_a_relative_output_is_refused_with_what_to_give(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RAY_JOB_VARIABLE, "{}")
    args = argparse.Namespace(storage="results", mlflow_uri="sqlite:///m.db", data="data/x")
    with pytest.raises(ConfigError) as err:
        pin_args(args)
    text = str(err.value)
    assert text.startswith("2 invalid config field(s) in the locations this job writes to:\n")
    assert "--storage = 'results': a relative path under `ray job submit`" in text and "s3://" in text
    assert "--mlflow-uri = 'sqlite:///m.db'" in text
    ok = argparse.Namespace(storage=str(tmp_path / "abs"), data="data/x")
    pin_args(ok)  # absolute outputs and relative inputs (read from Ray's copy of the repository) pass
    assert ok.storage == str(tmp_path / "abs")


def test_data_and_model_folders_are_pinned_and_names_are_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RAY_JOB_VARIABLE, raising=False)
    (tmp_path / "reviews").mkdir()
    (tmp_path / "my-model").mkdir()
    data = pinned_data(DataConfig(source="reviews", cache_dir="cache"))
    assert data.source == str(tmp_path.resolve() / "reviews") and data.cache_dir == str(tmp_path.resolve() / "cache")
    assert pinned_data(DataConfig(source="some/hub-id")).source == "some/hub-id"
    assert pinned_model("my-model") == str(tmp_path.resolve() / "my-model")
    assert pinned_model("minilm-l6") == "minilm-l6" and pinned_model("org/hub-id") == "org/hub-id"


def test_the_default_cache_is_the_users_cache_folder_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTISWEEP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert DataConfig().cache_dir == str(tmp_path / "xdg" / "sentisweep")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert DataConfig().cache_dir == str(Path.home() / ".cache" / "sentisweep")
    monkeypatch.setenv("SENTISWEEP_CACHE_DIR", "/shared/cache")
    assert DataConfig().cache_dir == "/shared/cache"


def test_each_commands_default_config_is_found_from_any_directory(tmp_path, monkeypatch):
    """`python path/to/sweeps/ablation.py` from another folder once said the default config was no
    such file: the default was sweeps/configs/quick.yaml relative to where it ran."""
    from ray_jobs import embed_xgb
    from sentisweep.config import read_yaml
    from sweeps import ablation, search

    monkeypatch.chdir(tmp_path)
    for build_parser in (ablation.build_parser, search.build_parser, embed_xgb.build_parser):
        assert Path(build_parser().parse_args([]).config).is_file()
    with pytest.raises(ConfigError, match=f"config file = 'mine.yaml': no such file in {tmp_path}"):
        read_yaml("mine.yaml")
