"""Data sources, label mapping, splits and subsets, and every bad input named in issue 2."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from helpers import synthetic_reviews

from sentisweep.config import DataConfig
from sentisweep.trial.data import DataError, check_data, load_task_data

pytestmark = pytest.mark.unit


def _load(source, **kwargs):
    return load_task_data(DataConfig(source=str(source), **kwargs))


# .json holds an array of records, or JSON Lines (an array read as lines was one row of dicts)
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl", "json-array", "json-lines"])
def test_folder_of_each_format(tmp_path, fmt):
    for split, n in (("train", 60), ("test", 20)):
        frame = synthetic_reviews(n, seed=3)
        path = tmp_path / f"{split}.{fmt.split('-')[0]}"
        if fmt == "parquet":
            frame.to_parquet(path)
        elif fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_json(path, orient="records", lines=fmt != "json-array", indent=1 if fmt == "json-array" else 0)
    data = _load(tmp_path)
    assert data.sizes() == {"train": 54, "validation": 6, "test": 20}  # 10% of train, stratified
    assert data.splits["validation"]["label"].value_counts().tolist() == [3, 3]
    assert set(data.splits["train"].columns) == {"row_id", "text", "label"}


def test_single_file_carves_validation_and_test(tmp_path):
    synthetic_reviews(100, seed=4).to_csv(tmp_path / "all.csv", index=False)
    data = _load(tmp_path / "all.csv")
    assert data.sizes() == {"train": 81, "validation": 9, "test": 10}
    assert any("carved" in line for line in data.report)


def test_aclimdb_folder(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label, texts in (("pos", ["a great film", "loved it<br />truly"]), ("neg", ["dull", "awful plot"])):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i, text in enumerate(texts * 5):
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(text)
    data = _load(tmp_path)  # the folder that holds aclImdb/ works, as does aclImdb/ itself
    assert data.label_names == ["neg", "pos"]
    assert data.sizes()["test"] == 20
    assert "loved it\ntruly" in set(data.splits["test"]["text"])  # <br /> cleaned
    assert _load(root).sizes() == data.sizes()


def test_string_labels_are_mapped_and_reported(tmp_path):
    frame = synthetic_reviews(40, seed=5)
    frame["sentiment"] = frame.pop("label").map({0: "negative", 1: "positive"})
    frame.rename(columns={"text": "review"}).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    data = _load(tmp_path, text_column="review", label_column="sentiment")
    assert data.label_names == ["negative", "positive"]
    assert "classes: 0=negative, 1=positive" in data.report
    merged = pd.concat(data.splits.values())
    assert set(merged["label"]) == {0, 1}


def test_hub_source_uses_load_dataset(monkeypatch):
    import datasets

    def fake_load_dataset(name):
        assert name == "imdb"
        features = datasets.Features({"text": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=["neg", "pos"])})
        make = lambda n: datasets.Dataset.from_pandas(synthetic_reviews(n, seed=n), features=features)  # noqa: E731
        return datasets.DatasetDict(train=make(40), test=make(20), unsupervised=make(10))

    monkeypatch.delenv("SENTISWEEP_DATA_MIRROR", raising=False)  # the Hub, mocked at the datasets boundary
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = _load("imdb")
    assert data.label_names == ["neg", "pos"] and data.sizes()["test"] == 20


def test_hub_unreachable_says_what_to_do(monkeypatch, tmp_path):
    import datasets

    def offline(name):
        raise ConnectionError("cannot reach the hub")

    from sentisweep.trial.data import check_source

    monkeypatch.delenv("SENTISWEEP_DATA_MIRROR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(datasets, "load_dataset_builder", offline)
    with pytest.raises(DataError, match="not loadable from the Hugging Face Hub.*set SENTISWEEP_DATA_MIRROR"):
        _load("imdb")
    [problem] = check_source(DataConfig(source="imdb"))  # the dry run's one line
    assert problem.startswith("data.source = 'imdb': not in a local mirror") and "SENTISWEEP_DATA_MIRROR" in problem
    assert problem.endswith(f"(a relative one is read from {Path.cwd()})")  # data/x: a hub id, or a folder
    monkeypatch.setenv("SENTISWEEP_DATA_MIRROR", str(tmp_path))  # set, to the folder above the right one
    [problem] = check_source(DataConfig(source="imdb"))
    assert f"set SENTISWEEP_DATA_MIRROR (now {str(tmp_path)!r}, which holds no imdb/ folder) to a folder" in problem


def test_reshuffle_split(data_dir):
    data = _load(data_dir, split="reshuffle")
    assert data.sizes() == {"train": 166, "validation": 21, "test": 21}  # 208 rows pooled


def test_same_seed_same_rows_and_stratified_subsets(data_dir):
    first = _load(data_dir, train_size=30, eval_size=10, test_size=12)
    second = _load(data_dir, train_size=30, eval_size=10, test_size=12)
    for split in first.splits:
        assert first.splits[split]["row_id"].tolist() == second.splits[split]["row_id"].tolist()
    assert first.splits["train"]["label"].value_counts().tolist() == [15, 15]
    other = _load(data_dir, train_size=30, split_seed=1)
    assert other.splits["train"]["row_id"].tolist() != first.splits["train"]["row_id"].tolist()


def test_subset_larger_than_split_uses_all_with_a_warning(data_dir, caplog):
    with caplog.at_level(logging.WARNING):
        data = _load(data_dir, test_size=10_000)
    assert data.sizes()["test"] == 48 and "test_size" in caplog.text
    # and the line every sweep and search prints before any work says it too, not only the log
    line = check_data(DataConfig(source=str(data_dir), test_size=10_000, eval_size=8))
    assert line.splitlines()[1:] == ["WARNING: data.test_size = 10,000 but the test split holds 48 rows: "
                                     "the trials use all of them"]


def test_cleaning_can_be_turned_off(data_dir):
    raw = _load(data_dir, clean_html=False)
    assert raw.splits["test"]["text"].str.contains("<br />").any()
    assert not _load(data_dir).splits["test"]["text"].str.contains("<br").any()


# -- bad input ---------------------------------------------------------------------------

def test_missing_path():
    with pytest.raises(DataError, match=r"data.source = './nope/here': no such file or folder"):
        _load("./nope/here")


def test_unknown_format(tmp_path):
    (tmp_path / "train.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown format '.xlsx'; allowed: .parquet, .csv, .jsonl"):
        _load(tmp_path / "train.xlsx")


def test_folder_without_train_file_lists_what_it_has(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"expected train\.\{parquet,csv,jsonl,json\}.*found: notes.txt"):
        _load(tmp_path)


def test_missing_columns_lists_present_ones(data_dir):
    with pytest.raises(DataError, match=r"missing column\(s\) \['review'\] \(data.text_column\); "
                                        r"columns present: \['text', 'label'\]"):
        _load(data_dir, text_column="review")


def test_one_class_only(tmp_path):
    pd.DataFrame({"text": ["good", "fine", "ok"] * 4, "label": [1] * 12}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="only one class"):
        _load(tmp_path)


def test_more_classes_than_the_task_allows(tmp_path):
    pd.DataFrame({"text": list("abcdefghi"), "label": [0, 1, 2] * 3}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"3 classes \[0, 1, 2\] but data.num_labels = 2"):
        _load(tmp_path)
    assert len(_load(tmp_path, num_labels=3).label_names) == 3


def test_empty_and_null_texts_are_dropped_with_a_warning(tmp_path, caplog):
    frame = synthetic_reviews(40, seed=6)
    frame.loc[[0, 1], "text"] = ""
    frame.loc[2, "text"] = None
    frame.to_parquet(tmp_path / "train.parquet")
    with caplog.at_level(logging.WARNING):
        data = _load(tmp_path)
    assert sum(data.sizes().values()) == 37
    assert "dropping 3 empty or null texts" in caplog.text


def test_all_texts_empty_is_an_error(tmp_path):
    pd.DataFrame({"text": ["", " ", None, ""], "label": [0, 1, 0, 1]}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"every text is empty or null \(4 rows\)"):
        _load(tmp_path)


def test_corrupt_parquet(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match=r"train.parquet: not a readable parquet file"):
        _load(tmp_path)


def test_a_csv_row_with_a_field_more_than_its_header_is_refused(tmp_path):
    # pandas read this first row's 'Great movie' as an index and ' loved it.' as the text, labelled 1
    (tmp_path / "train.csv").write_text("text,label\nGreat movie, loved it.,1\nDull.,0\n")
    with pytest.raises(DataError, match=r"train.csv: not a readable csv file .*more fields than .*must be quoted"):
        _load(tmp_path)


def test_label_names_must_match_the_classes(data_dir):
    assert _load(data_dir, label_names=["negative", "positive"]).label_names == ["negative", "positive"]
    with pytest.raises(DataError, match=r"data.label_names = \['a'\]: 1 names for 2 classes"):
        _load(data_dir, label_names=["a"])


def test_selected_splits_are_cached_per_config_and_source_file(tmp_path, monkeypatch):
    from sentisweep.trial import data as data_module
    from sentisweep.trial.split_cache import SPLIT_CACHE_STATS

    source = tmp_path / "reviews"
    source.mkdir()
    synthetic_reviews(120, seed=8).to_parquet(source / "train.parquet")
    settings = {"train_size": 40, "test_size": 20, "cache_dir": str(tmp_path / "cache"), "label_names": ["neg", "pos"]}
    first = _load(source, **settings)
    hits = SPLIT_CACHE_STATS["hits"]

    def no_reading(*args):
        raise AssertionError("the source was read again")

    with monkeypatch.context() as patch:  # a hit: the source is not read, the rows are the same
        patch.setattr(data_module, "_read_source", no_reading)
        again = _load(source, **settings)
    assert SPLIT_CACHE_STATS["hits"] == hits + 1
    assert again.label_names == ["neg", "pos"] and again.sizes() == first.sizes()
    for name, frame in first.splits.items():
        pd.testing.assert_frame_equal(again.splits[name], frame, check_dtype=False)
        assert again.splits[name]["label"].dtype == "int64"
    assert again.report[:-1] == first.report and "cache" in again.report[-1]

    other = _load(source, **{**settings, "train_size": 30})  # another setting: another entry
    assert other.sizes()["train"] == 30 and SPLIT_CACHE_STATS["hits"] == hits + 1
    synthetic_reviews(200, seed=9).to_parquet(source / "train.parquet")  # the file changed: a miss
    changed = _load(source, **settings)
    assert SPLIT_CACHE_STATS["hits"] == hits + 1
    assert not changed.splits["test"]["text"].equals(first.splits["test"]["text"])


def test_split_cache_skips_hub_ids_and_aclimdb(tmp_path):
    from sentisweep.trial.data import _local_files
    from sentisweep.trial.split_cache import cache_file

    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    for source in ("imdb", str(tmp_path), str(tmp_path / "aclImdb")):
        assert cache_file(DataConfig(source=source), _local_files(source)) is None


def _imdb_like(folder):
    folder.mkdir(parents=True)
    synthetic_reviews(60, seed=3).to_parquet(folder / "train.parquet")
    synthetic_reviews(20, seed=4).to_parquet(folder / "test.parquet")


def test_a_dataset_id_is_read_from_the_local_mirror(tmp_path, monkeypatch):
    from sentisweep.trial.data import MIRROR_VARIABLE, check_source, resolve_source

    _imdb_like(tmp_path / "mirror" / "imdb")
    monkeypatch.setenv(MIRROR_VARIABLE, str(tmp_path / "mirror"))
    config = DataConfig(source="imdb", cache_dir=str(tmp_path / "cache"))
    assert resolve_source("imdb") == str((tmp_path / "mirror" / "imdb").resolve())
    assert check_source(config) == []
    data = load_task_data(config)
    assert data.sizes() == {"train": 54, "validation": 6, "test": 20} and "(folder)" in data.report[0]
    # a dataset the mirror lacks, and a path, are left as they are
    assert resolve_source("stanfordnlp/sst2") == "stanfordnlp/sst2"
    assert resolve_source(str(tmp_path)) == str(tmp_path)


def test_the_dry_run_check_reads_columns_not_data(tmp_path):
    from sentisweep.trial.data import check_source

    _imdb_like(tmp_path / "reviews")
    assert check_source(DataConfig(source=str(tmp_path / "reviews"))) == []
    problems = check_source(DataConfig(source=str(tmp_path / "reviews"), text_column="review"))
    assert [p.split(": ")[1].split(" lacks")[0] for p in problems] == ["test.parquet", "train.parquet"]
    assert all("lacks column(s) ['review'] (data.text_column / data.label_column)" in p for p in problems)
    (tmp_path / "reviews" / "test.parquet").write_bytes(b"PAR1 not really")
    assert any("test.parquet is not a readable Parquet file" in p
               for p in check_source(DataConfig(source=str(tmp_path / "reviews"))))
    assert check_source(DataConfig(source=str(tmp_path / "nowhere"))) == [
        f"data.source = {str(tmp_path / 'nowhere')!r}: no such file or folder"]
