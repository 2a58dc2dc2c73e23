"""Locations: a local folder or a URI (s3://, gs://, file://) read the same way. Here file://
stands in for object storage; tests/test_cluster.py runs the same code against S3 (moto)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sentisweep.predict import is_model_checkpoint
from sentisweep.results import TrialResult, read_results, result_files, write_results
from sentisweep.storage import Store, filesystem, is_remote, local_copy

pytestmark = pytest.mark.unit


def _row(trial_id: str, sweep: str = "s") -> TrialResult:
    return TrialResult(sweep=sweep, trial_id=trial_id, model="tiny-bert", method="full", seed=1)


def test_results_read_alike_from_a_folder_and_its_uri(tmp_path):
    # a sweep's table covers its trials' own rows; a lone trial row outside it counts once
    write_results([_row("a"), _row("b")], tmp_path / "sweep" / "results.parquet")
    write_results([_row("a")], tmp_path / "sweep" / "trials" / "a" / "result.parquet")
    write_results([_row("c", "adhoc")], tmp_path / "adhoc" / "c" / "result.parquet")
    local = read_results(tmp_path)
    remote = read_results(tmp_path.as_uri())
    assert sorted(local["trial_id"]) == sorted(remote["trial_id"]) == ["a", "b", "c"]
    assert all(f.startswith("file://") for f in result_files(tmp_path.as_uri()))
    assert result_files(tmp_path / "sweep" / "results.parquet") == [str(tmp_path / "sweep" / "results.parquet")]


def test_missing_location_is_named(tmp_path):
    from sentisweep.results import ResultsError

    with pytest.raises(ResultsError, match="no such file or folder"):
        read_results((tmp_path / "nothing").as_uri())


def test_a_remote_checkpoint_is_recognised_and_downloaded_once(tmp_path):
    checkpoint = tmp_path / "bucket" / "trial" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    uri = checkpoint.as_uri()
    assert is_remote(uri) and not is_remote(checkpoint)
    assert is_model_checkpoint(uri) and is_model_checkpoint(str(checkpoint))
    assert not is_model_checkpoint((tmp_path / "bucket").as_uri())  # no model files there
    cache = tmp_path / "cache"
    copy = local_copy(uri, cache)
    assert copy.parent == cache / "remote" and (copy / "model.safetensors").read_bytes() == b"weights"
    (checkpoint / "model.safetensors").write_bytes(b"changed")
    assert local_copy(uri, cache) == copy and (copy / "model.safetensors").read_bytes() == b"weights"  # cached
    assert local_copy(checkpoint, cache) == checkpoint  # a local folder is used where it is
    assert not list((cache / "remote").glob(".*.download"))  # nothing half-downloaded left behind


def test_filesystem_prefix_makes_a_path_a_location_again(tmp_path):
    fs, path, prefix = filesystem(tmp_path.as_uri())
    assert prefix == "file://" and (prefix + path) == tmp_path.as_uri()
    fs, path, prefix = filesystem(tmp_path)
    assert prefix == "" and path == str(tmp_path)


def test_what_is_written_aside_then_renamed_keeps_the_umask(tmp_path):
    """tempfile's mkstemp and mkdtemp made results 0600 and a download or an export 0700 whatever
    the umask: results a container wrote as root could not be read by the user beside them."""
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "config.json").write_text("{}")
    previous = os.umask(0o022)
    try:
        table = write_results([_row("a")], tmp_path / "s" / "results.parquet")
        config = Store(str(tmp_path)).write_bytes(b"{}", "s", "run_config.json")
        download = local_copy((tmp_path / "bucket").as_uri(), tmp_path / "cache")
    finally:
        os.umask(previous)
    modes = {Path(path).name: oct(Path(path).stat().st_mode & 0o777) for path in (table, config, download)}
    assert modes == {"results.parquet": "0o644", "run_config.json": "0o644", download.name: "0o755"}
