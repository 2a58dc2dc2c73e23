"""Labelled text sources -> train / validation / test DataFrames (row_id, text, label).

Sources: a Hugging Face dataset id (`imdb`), a local folder or file of Parquet / CSV /
JSON(L), or a raw `aclImdb` folder as downloaded from Stanford. A dataset id is read from a
local mirror where one is configured (`SENTISWEEP_DATA_MIRROR`, a folder holding
`<dataset id>/{train,test}.parquet`), else from the Hub. Every split and subset is seeded
and stratified: the same config gives the same rows, always.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from sentisweep.config import DataConfig
from sentisweep.exit_codes import BadInput
from sentisweep.trial import split_cache

log = logging.getLogger(__name__)

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "json"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test"}
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
MIRROR_VARIABLE = "SENTISWEEP_DATA_MIRROR"


class DataError(BadInput):
    """Bad data input; the message names the file or field and what was expected."""


@dataclass
class TaskData:
    splits: dict[str, pd.DataFrame]  # train / validation / test, columns row_id, text, label
    label_names: list[str]  # label i means label_names[i]
    report: list[str]  # what was done to the data, for logs and provenance

    def sizes(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.splits.items()}


def resolve_source(source: str) -> str:
    """Where a source is read from: a dataset id's copy in the local mirror when there is
    one (`$SENTISWEEP_DATA_MIRROR/<id>`), else the source as given."""
    mirror = os.environ.get(MIRROR_VARIABLE)
    if mirror and not _looks_like_path(source):
        copy = Path(mirror).expanduser() / source
        if copy.is_dir():
            return str(copy.resolve())
    return source


def check_source(cfg: DataConfig) -> list[str]:
    """Cheap checks before any work (a dry run): the source can be had, and a local one's
    files have the configured columns. Reads Parquet schemas, not the data; a Hub dataset is
    only looked up. Returns the problems, each naming the field and the value."""
    source = resolve_source(cfg.source)
    path = Path(source).expanduser()
    if not path.exists():
        if _looks_like_path(source):
            return [f"data.source = {cfg.source!r}: no such file or folder"]
        try:
            import datasets

            datasets.load_dataset_builder(source)
        except Exception as err:  # offline, unknown id, no access: one line saying what to set
            return [_hub_problem(cfg.source, err)]
        return []
    problems = []
    for file in _local_files(source) or []:
        if file.suffix.lower() != ".parquet":
            continue
        try:
            columns = pq.read_schema(file).names
        except Exception as err:  # pyarrow raises several types for what is not Parquet
            problems.append(f"data.source = {cfg.source!r}: {file.name} is not a readable Parquet file "
                            f"({type(err).__name__})")
            continue
        missing = [c for c in (cfg.text_column, cfg.label_column) if c not in columns]
        if missing:
            problems.append(f"data.source = {cfg.source!r}: {file.name} lacks column(s) {missing} "
                            f"(data.text_column / data.label_column); it has {columns}")
    return problems


def check_data(cfg: DataConfig) -> str:
    """Everything the real run checks about the data before it trains, for a dry run as for the
    real run (issue 35: a dry run once passed 3 label_names for 2 classes): the source, then the
    splits loaded (columns, classes, label_names, sizes; cached, so the run reads them again for
    free). Returns one line saying what was found; raises DataError with every problem."""
    problems = check_source(cfg)
    if problems:
        raise DataError(*problems)
    data = load_task_data(cfg)
    sizes = ", ".join(f"{split} {len(frame):,}" for split, frame in data.splits.items())
    classes = ", ".join(f"{i}={name}" for i, name in enumerate(data.label_names))
    # a size past the split's rows takes them all (a tuning trial's 64-row test split counts on
    # it); a user who asked for more is told so here, before any work, not only in a log line
    short = [f"\nWARNING: data.{field} = {asked:,} but the {split} split holds {len(data.splits[split]):,} rows: "
             "the trials use all of them" for split, field in _SIZE_FIELD.items()
             if (asked := getattr(cfg, field)) and asked > len(data.splits[split])]
    return f"data: {cfg.source} ({resolve_source(cfg.source)}): {sizes} rows; classes {classes}" + "".join(short)


def _hub_problem(source: str, err: Exception) -> str:
    mirror = os.environ.get(MIRROR_VARIABLE)  # set, but to a folder without this dataset: say which
    now = f" (now {mirror!r}, which holds no {source}/ folder)" if mirror else ""
    return (f"data.source = {source!r}: not in a local mirror and not loadable from the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}). Offline, set "
            f"{MIRROR_VARIABLE}{now} to a folder holding {source}/train.parquet and test.parquet, or point "
            f"data.source at a local folder of train/test Parquet, CSV, JSONL or JSON files (a relative one is "
            f"read from {Path.cwd()})")


def load_task_data(cfg: DataConfig) -> TaskData:
    cached_at = split_cache.cache_file(cfg, _local_files(resolve_source(cfg.source)))
    cached = split_cache.read(cached_at)
    if cached is not None:
        return TaskData(*cached)
    data = _load(cfg)
    split_cache.write(cached_at, data.splits, data.label_names, data.report)
    return data


def _load(cfg: DataConfig) -> TaskData:
    raw, origin = _read_source(resolve_source(cfg.source))
    report = [f"source {cfg.source!r} ({origin}): " + ", ".join(f"{k} {len(v)}" for k, v in raw.items())]
    frames = {}
    for split, frame in raw.items():
        frames[split] = _select_columns(frame, cfg, split, f"{cfg.source} [{split}]")
    label_names = _encode_labels(frames, cfg, report)
    for split in list(frames):
        frames[split] = _drop_empty(frames[split], f"{cfg.source} [{split}]", report)
        if cfg.clean_html:
            frames[split]["text"] = frames[split]["text"].str.replace(_BR, "\n", regex=True)
    splits = _make_splits(frames, cfg, report)
    for name, size in (("train", cfg.train_size), ("validation", cfg.eval_size), ("test", cfg.test_size)):
        if size is not None:
            splits[name] = _stratified_take(splits[name], size, cfg.split_seed, f"data.{_SIZE_FIELD[name]}", report)
    report.append("final: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return TaskData(splits, label_names, report)


_SIZE_FIELD = {"train": "train_size", "validation": "eval_size", "test": "test_size"}


# -- reading ---------------------------------------------------------------------------

def _is_aclimdb(path: Path) -> bool:
    return (path / "train" / "pos").is_dir() or (path / "aclImdb").is_dir()


def _local_files(source: str) -> list[Path] | None:
    """The files a local file or folder source reads; None for hub ids and aclImdb folders
    (100,000 files: not worth a cache key)."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir() and not _is_aclimdb(path):
        return sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in FORMATS)
    return None


def _looks_like_path(source: str) -> bool:
    return (source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FORMATS
            or Path(source).exists())


def _read_source(source: str) -> tuple[dict[str, pd.DataFrame], str]:
    path = Path(source).expanduser()
    if path.exists():
        if path.is_file():
            return {"train": read_table(path, str(path))}, "file"
        if _is_aclimdb(path):
            return _read_aclimdb(path if (path / "train").is_dir() else path / "aclImdb"), "aclImdb folder"
        return _read_folder(path), "folder"
    if _looks_like_path(source):
        raise DataError(f"data.source = {source!r}: no such file or folder")
    return _read_hub(source), "Hugging Face Hub"


def read_table(path: Path, name: str) -> pd.DataFrame:
    """A Parquet, CSV, JSON Lines or JSON file as a DataFrame: the one reader of a training source's
    files and of predict's --input. `name` starts each error (the file, or `--input = '...'`)."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{name}: unknown format {path.suffix!r}; allowed: {', '.join(FORMATS)}")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "csv":
            return _read_csv(path)
        # .json: an array of records, or JSON Lines (as Hugging Face's json loader takes both); an
        # array read as lines became one row of dicts, columns 0, 1, ... and no `text`
        return pd.read_json(path, lines=kind == "jsonl" or not _starts_an_array(path))
    except Exception as err:  # pyarrow / pandas raise many types for corrupt files
        hint = "; a CSV text holding a comma must be quoted" if kind == "csv" and "fields" in str(err) else ""
        err = f"{type(err).__name__}: {str(err).strip()}"
        raise DataError(f"{name}: not a readable {kind} file ({err}){hint}") from None


def _starts_an_array(path: Path) -> bool:
    with open(path, encoding="utf-8") as file:
        return file.read(4096).lstrip().startswith("[")


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV file, refused where a row has more fields than the header. pandas takes a first row
    with one field more as an index column: under a `text` header, `Great movie, loved it.` became
    the text ' loved it.' and the row's label the next field, with no word said."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, index_col=False)  # no guessed index: pandas warns, we refuse
        except pd.errors.ParserWarning:
            raise ValueError("a row has more fields than the header") from None


def _read_folder(path: Path) -> dict[str, pd.DataFrame]:
    found: dict[str, pd.DataFrame] = {}
    for file in sorted(path.iterdir()):
        split = SPLIT_NAMES.get(file.stem.lower())
        if file.is_file() and split and file.suffix.lower() in FORMATS:
            if split in found:
                raise DataError(f"{path}: more than one file for split {split!r}")
            found[split] = read_table(file, str(file))
    if "train" not in found:
        present = ", ".join(sorted(f.name for f in path.iterdir())) or "nothing"
        raise DataError(f"{path}: expected train.{{{','.join(kind for kind in FORMATS.values())}}} (and optionally "
                        f"validation.*, test.*); found: {present}")
    return found


def _read_aclimdb(root: Path) -> dict[str, pd.DataFrame]:
    """Stanford's layout: {train,test}/{pos,neg}/<id>_<rating>.txt."""
    splits = {}
    for split in ("train", "test"):
        rows = []
        for label_name in ("neg", "pos"):
            folder = root / split / label_name
            if not folder.is_dir():
                raise DataError(f"{root}: aclImdb folder lacks {split}/{label_name}/")
            for file in sorted(folder.glob("*.txt"), key=lambda f: int(f.stem.split("_")[0])):
                review_id, rating = file.stem.split("_")
                rows.append({"text": file.read_text(encoding="utf-8"), "label": label_name,
                             "review_id": int(review_id), "rating": int(rating)})
        splits[split] = pd.DataFrame(rows)
    return splits


def _read_hub(source: str) -> dict[str, pd.DataFrame]:
    import datasets

    try:
        dataset = datasets.load_dataset(source)
    except Exception as err:
        raise DataError(_hub_problem(source, err)) from None
    frames = {}
    for split, part in dataset.items():
        if split in SPLIT_NAMES:  # IMDb also has an unlabelled "unsupervised" split
            frame = part.to_pandas()
            feature = part.features.get("label")
            if feature is not None and hasattr(feature, "names"):  # ClassLabel -> its names
                frame["label"] = [feature.names[i] for i in frame["label"]]
            frames[SPLIT_NAMES[split]] = frame
    return frames


# -- columns, labels, empty texts --------------------------------------------------------

def _select_columns(frame: pd.DataFrame, cfg: DataConfig, split: str, where: str) -> pd.DataFrame:
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in frame.columns]
    if missing:
        field = "data.text_column" if cfg.text_column in missing else "data.label_column"
        raise DataError(f"{where}: missing column(s) {missing} ({field}); "
                        f"columns present: {list(frame.columns)}")
    out = pd.DataFrame({"text": frame[cfg.text_column], "label": frame[cfg.label_column]})
    out.insert(0, "row_id", [f"{split}:{i}" for i in range(len(out))])  # stable across trials
    return out.reset_index(drop=True)


def _encode_labels(frames: dict[str, pd.DataFrame], cfg: DataConfig, report: list[str]) -> list[str]:
    for split, frame in frames.items():
        if frame["label"].isna().all():
            raise DataError(f"data.label_column = {cfg.label_column!r}: every label of {cfg.source} [{split}] "
                            f"is empty ({len(frame)} rows)")
    labels = pd.concat([f["label"].dropna() for f in frames.values()])
    classes = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise DataError(f"data.label_column = {cfg.label_column!r}: only one class "
                        f"({classes}); a classifier needs at least 2")
    if len(classes) > cfg.num_labels:
        raise DataError(f"data.label_column = {cfg.label_column!r}: {len(classes)} classes "
                        f"{classes[:10]} but data.num_labels = {cfg.num_labels}")
    index = {value: i for i, value in enumerate(classes)}
    for frame in frames.values():
        null = frame["label"].isna()
        if null.any():
            frame.drop(index=frame.index[null], inplace=True)
            log.warning("data.label_column = %r: dropping %d rows with no label", cfg.label_column, int(null.sum()))
            report.append(f"dropped {int(null.sum())} rows with no label")
        frame["label"] = frame["label"].map(index).astype("int64")
    names = [str(c) for c in classes]
    if cfg.label_names is not None:
        if len(cfg.label_names) != len(classes):
            raise DataError(f"data.label_names = {cfg.label_names!r}: {len(cfg.label_names)} names "
                            f"for {len(classes)} classes {classes}")
        names = list(cfg.label_names)
    report.append("classes: " + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return names


def _drop_empty(frame: pd.DataFrame, where: str, report: list[str]) -> pd.DataFrame:
    empty = frame["text"].isna() | (frame["text"].astype(str).str.strip() == "")
    if empty.all():
        raise DataError(f"{where}: every text is empty or null ({len(frame)} rows)")
    if empty.any():
        log.warning("%s: dropping %d empty or null texts", where, int(empty.sum()))
        report.append(f"{where}: dropped {int(empty.sum())} empty or null texts")
    frame = frame[~empty].reset_index(drop=True)
    frame["text"] = frame["text"].astype(str)
    return frame


# -- splits and subsets ------------------------------------------------------------------

def _split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    counts = frame["label"].value_counts()
    held = math.ceil(fraction * len(frame))
    if held < 1 or held >= len(frame):
        raise DataError(f"{len(frame)} rows are too few to split off a {fraction:.0%} part")
    # Stratify whenever both parts can hold every class; tiny sets fall back to random.
    can_stratify = counts.min() >= 2 and min(held, len(frame) - held) >= len(counts)
    rest, part = train_test_split(frame, test_size=held, random_state=seed,
                                  stratify=frame["label"] if can_stratify else None)
    return rest.reset_index(drop=True), part.reset_index(drop=True)


def _make_splits(frames: dict[str, pd.DataFrame], cfg: DataConfig, report: list[str]) -> dict[str, pd.DataFrame]:
    seed = cfg.split_seed
    if cfg.split == "reshuffle":  # pool everything, cut 80 / 10 / 10
        pooled = pd.concat(frames.values(), ignore_index=True)
        train, held = _split(pooled, 0.2, seed)
        validation, test = _split(held, 0.5, seed)
        report.append("split: reshuffled all rows 80/10/10")
        return {"train": train, "validation": validation, "test": test}
    train = frames["train"]
    test = frames.get("test")
    if test is None:
        train, test = _split(train, cfg.validation_fraction, seed)
        report.append(f"split: no test split in the source; carved {len(test)} rows from train")
    validation = frames.get("validation")
    if validation is None:
        train, validation = _split(train, cfg.validation_fraction, seed)
        report.append(f"split: validation = {cfg.validation_fraction:.0%} of train, stratified")
    return {"train": train, "validation": validation, "test": test}


def _stratified_take(frame: pd.DataFrame, size: int, seed: int, field: str, report: list[str]) -> pd.DataFrame:
    if size >= len(frame):
        if size > len(frame):
            log.warning("%s = %d but only %d rows exist: using all of them", field, size, len(frame))
            report.append(f"{field} = {size} > {len(frame)} rows: using all")
        return frame
    from sklearn.model_selection import train_test_split

    counts = frame["label"].value_counts()
    stratify = frame["label"] if size >= len(counts) and counts.min() >= 2 else None
    taken, _ = train_test_split(frame, train_size=size, random_state=seed, stratify=stratify)
    return taken.reset_index(drop=True)
