"""Use a sweep's winner: pick a trial from a results store and classify texts with it.

    python -m sentisweep.predict --results results/quick "A wonderful, moving film." "Two hours I want back."
    python -m sentisweep.predict --results results/quick --select minilm-l6__ia3__s42 "Not bad at all."
    python -m sentisweep.predict --results results/quick --input reviews.csv --output predictions.parquet

The trial's checkpoint is loaded as it was trained (a full model, or a peft adapter on its
base model, merged into the weights for speed) and tokenized like training did (its
tokenizer and max_length). Batches are sorted by length, so little of the work is padding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sentisweep import exit_codes
from sentisweep.config import DEFAULT_MAX_LENGTH, default_cache_dir
from sentisweep.exit_codes import BadInput
from sentisweep.layout import DRIVER_LOCK
from sentisweep.results import ResultsError, read_results, trial_info
from sentisweep.storage import Store, driver_running, local_copy
from sentisweep.trial.data import FORMATS, read_table
from sentisweep.trial.device import inference_autocast

# "best" is chosen on the validation split, as the search's best_trial.yaml and embed_xgb's
# checkpoints are: picking on test accuracy and then quoting it would overstate the winner
SELECTION_METRIC = "best_val_accuracy"
LOWER_IS_BETTER = ("eval_loss", "train_seconds", "eval_seconds", "peak_memory_bytes")


class PredictError(BadInput):
    """Bad input to predict / export / demo; the message says what and what is allowed."""


def is_model_checkpoint(path) -> bool:
    """A folder (local, or in object storage: s3://...) with a model or a peft adapter."""
    if not isinstance(path, str):
        return False
    try:
        folder = Store(path)
    except ValueError:  # a file, not a folder
        return False
    return any(folder.is_file(name) for name in ("adapter_config.json", "config.json"))


def load_store(location: str | Path) -> pd.DataFrame:
    try:
        results = read_results(location)
    except ResultsError as err:
        raise PredictError(f"--results = {str(location)!r}: {err}") from None
    if driver_running(location):
        print(f"note: {location} is running now (its driver holds {DRIVER_LOCK}): the best is of the trials "
              "finished so far", file=sys.stderr)
    return results


def ranked_trials(results: pd.DataFrame, metric: str = SELECTION_METRIC) -> pd.DataFrame:
    """Ok trials with a model checkpoint, best first by `metric`."""
    numeric = [c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])]
    if metric not in numeric:
        raise PredictError(f"--metric = {metric!r}: not a numeric results column; e.g. accuracy, f1, roc_auc, "
                           "best_val_accuracy, eval_loss")
    ok = results[results["status"] == "ok"]
    if ok.empty:
        counts = results["status"].value_counts().to_dict()
        raise PredictError(f"no trial in these results finished ok ({counts}); nothing to predict with")
    usable = ok[ok["checkpoint_path"].map(is_model_checkpoint)]
    if usable.empty:
        raise PredictError(f"none of the {len(ok)} ok trials has a model checkpoint folder here (zero-shot, "
                           "embed+xgboost and baselines have none; trials keep one with training.keep_checkpoint)")
    return usable.sort_values(metric, ascending=metric in LOWER_IS_BETTER, na_position="last", kind="stable")


def select_trial(results: pd.DataFrame, select: str = "best", metric: str = SELECTION_METRIC) -> pd.Series:
    if select == "best":
        ranked = ranked_trials(results, metric)
        best = ranked.iloc[0]
        ok = results[results["status"] == "ok"]
        better = ok[ok[metric] < best[metric] if metric in LOWER_IS_BETTER else ok[metric] > best[metric]]
        if len(better):  # said: the trial used is not the best of the table
            print(f"note: {', '.join(better['trial_id'].head(3))}{' and more' if len(better) > 3 else ''} scored "
                  f"better by {metric} but left no model to load here (zero-shot, embed+xgboost and baselines keep "
                  "none; other trials keep theirs unless training.keep_checkpoint is false); the best with a model "
                  "is used", file=sys.stderr)
        tied = ranked[ranked[metric] == best[metric]].iloc[1:]
        if len(tied):  # 300 validation rows give few distinct values: the quick sweep's best three tied
            print(f"note: best by {metric} ({best[metric]:.4f}) is a tie of {best['trial_id']} with "
                  f"{', '.join(tied['trial_id'])}; the first in the table is used (--select TRIAL_ID for another)",
                  file=sys.stderr)
        return best
    match = results[results["trial_id"] == select]
    if match.empty:
        known = ", ".join(results["trial_id"].astype(str).head(12))
        raise PredictError(f"--select = {select!r}: no such trial; use best or one of: {known}")
    row = match.iloc[-1]
    if row["status"] != "ok":
        first_line = str(row["error"]).splitlines()[0] if isinstance(row["error"], str) else ""
        raise PredictError(f"--select = {select!r}: that trial's status is {row['status']} ({first_line[:200]})")
    if not isinstance(row["checkpoint_path"], str):
        raise PredictError(f"--select = {select!r}: that trial kept no model checkpoint (zero-shot, embed+xgboost "
                           "and baselines keep none; trials keep one with training.keep_checkpoint)")
    if not is_model_checkpoint(row["checkpoint_path"]):
        raise PredictError(f"--select = {select!r}: its checkpoint {row['checkpoint_path']!r} is missing or is not "
                           "a model folder")
    return row


def trial_cache_dir(row: pd.Series) -> str:
    """The cache the trial used (tiny models are materialised there)."""
    try:
        return json.loads(row["config_json"])["data"]["cache_dir"]
    except (TypeError, KeyError, ValueError):
        return default_cache_dir()


class Classifier:
    """A trial's checkpoint as a ready classifier: merged weights, its tokenizer, its labels."""

    def __init__(self, checkpoint: str | Path, cache_dir: str | None = None, device: str = "cpu"):
        from sentisweep.trial.checkpoint import load_checkpoint

        cache_dir = cache_dir or default_cache_dir()
        folder = local_copy(checkpoint, cache_dir)  # a checkpoint in object storage: downloaded once
        info = trial_info(folder)
        self.info = info
        self.label_names = list(info.get("label_names") or ["0", "1"])
        self.max_length = int(info.get("max_length") or DEFAULT_MAX_LENGTH)
        # a QLoRA adapter is merged into the full-precision base: the same function up to the 4-bit
        # rounding it was trained over, and loadable anywhere
        self.model, self.tokenizer = load_checkpoint(folder, cache_dir, self.label_names)
        self.device, self.packed = device, False
        self.model = self.model.to(device).eval()

    def probabilities(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(n, classes), in the order of `texts`. On CPU the first call packs the model's
        linears for oneDNN where that is the faster (`sentisweep/trial/onednn.py`: the embedder measured
        1.68x on an AVX-512 CPU): from then on `self.model` predicts only (export saves a Classifier that
        has not predicted)."""
        import torch

        from sentisweep.trial.batching import length_sorted_batches
        from sentisweep.trial.onednn import faster_here, pack_linears
        from sentisweep.trial.tokenization import encode

        check_texts(texts)
        if self.device == "cpu" and not self.packed:
            self.packed = bool(faster_here() and pack_linears(self.model))
        # the tokens the trial was trained on: its head, tail or both (older checkpoints: head)
        ids = encode(list(texts), self.tokenizer, self.max_length, self.info.get("truncation", "head"),
                     float(self.info.get("head_share", 0.25)))
        out = np.empty((len(ids), len(self.label_names)))
        start, done = time.perf_counter(), 0
        with torch.inference_mode(), inference_autocast(self.device):
            for rows, input_ids, mask in length_sorted_batches(ids, batch_size, self.tokenizer.pad_token_id):
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                done += len(rows)
                if progress and (done == len(ids) or done % (20 * batch_size) == 0):
                    print(f"  {done}/{len(ids)} texts, {done / (time.perf_counter() - start):.1f} texts/s",
                          file=sys.stderr, flush=True)
        return out

    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> pd.DataFrame:
        probabilities = self.probabilities(texts, batch_size, progress)
        best = probabilities.argmax(axis=1)
        frame = pd.DataFrame({"text": list(texts), "label": [self.label_names[i] for i in best],
                              "probability": probabilities[np.arange(len(best)), best]})
        for i, name in enumerate(self.label_names):
            frame[f"probability_{name}"] = probabilities[:, i]
        return frame


def check_device(device: str) -> None:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PredictError(f"--device = {device!r}: allowed: cpu, cuda, cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError(f"--device = {device!r}: no CUDA GPU is visible here; use --device cpu")


def check_texts(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise PredictError(f"text {i + 1} of {len(texts)} is empty; give each text some words")


def load_selected(results: str | Path, select: str = "best", metric: str = SELECTION_METRIC,
                  device: str = "cpu") -> tuple[pd.Series, Classifier]:
    from sentisweep.trial.models import set_quiet

    set_quiet(True)  # no weight-loading bars and LOAD REPORT tables around the answer
    row = select_trial(load_store(results), select, metric)
    return row, Classifier(row["checkpoint_path"], trial_cache_dir(row), device)


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise PredictError(f"--input = {str(path)!r}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".txt", *FORMATS):
        raise PredictError(f"--input = {str(path)!r}: unknown format {path.suffix!r}; allowed: .txt (one text a "
                           f"line), {', '.join(FORMATS)}")
    if suffix == ".txt":
        return [line for line in path.read_text().splitlines() if line.strip()]
    frame = read_table(path, f"--input = {str(path)!r}")
    if text_column not in frame:
        raise PredictError(f"--input = {str(path)!r}: no column {text_column!r}; columns: {list(frame.columns)} "
                           "(choose one with --text-column)")
    return frame[text_column].fillna("").astype(str).tolist()  # an empty cell is an empty text, not "nan"


def describe(row: pd.Series) -> str:
    def number(column):
        return f"{row[column]:.4f}" if pd.notna(row.get(column)) else "n/a"

    return (f"trial {row['trial_id']} ({row['model']}, {row['method']}), validation accuracy "
            f"{number('best_val_accuracy')}, test accuracy {number('accuracy')}")


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """--results, --select, --metric: which trial predict, export and the demo use."""
    p.add_argument("--results", required=True, help="a results store: <storage>/<name>, or its results.parquet")
    p.add_argument("--select", default="best", help="best (by --metric), or a trial id")
    p.add_argument("--metric", default=SELECTION_METRIC,
                   help=f"what best means (default {SELECTION_METRIC}, the validation split's, so the test "
                        "accuracy printed stays an honest estimate; also accuracy, f1, eval_loss: lowest)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sentisweep.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", help="texts to classify")
    add_selection_arguments(p)
    p.add_argument("--input", help="a file of texts: .txt (one a line), .csv, .parquet, .jsonl, .json (an array "
                                   "of records, or JSON Lines)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--output", help="write the predictions here (.parquet or .csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an --output file already there")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return p


def check_output(output: str | None, overwrite: bool) -> None:
    """Before the model loads: a format we write, and no earlier predictions replaced unasked."""
    if not output:
        return
    if Path(output).suffix.lower() not in (".parquet", ".csv"):
        raise PredictError(f"--output = {output!r}: allowed: a .parquet or .csv file")
    if Path(output).is_dir():
        raise PredictError(f"--output = {output!r} is a folder; give a file in it, e.g. {output}/predictions.parquet")
    if Path(output).exists() and not overwrite:
        raise PredictError(f"--output = {output!r} exists; pass --overwrite to replace it, or choose another file")


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    read = read_texts(args.input, args.text_column) if args.input else []
    if args.input and not read:
        raise PredictError(f"--input = {args.input!r}: holds no texts")
    texts = list(args.texts) + read
    if not texts:
        raise PredictError("nothing to classify: give texts as arguments or --input FILE")
    check_output(args.output, args.overwrite)
    check_texts(texts)  # before the model loads
    if args.batch_size < 1:
        raise PredictError(f"--batch-size = {args.batch_size}: must be at least 1")
    check_device(args.device)
    row, classifier = load_selected(args.results, args.select, args.metric, args.device)
    print(f"using {describe(row)}", file=sys.stderr)
    predictions = classifier.predict(texts, args.batch_size, progress=len(texts) > 256)
    predictions.insert(0, "trial_id", row["trial_id"])
    if args.output:
        from sentisweep.storage import write_parquet_atomic

        if args.output.lower().endswith(".csv"):
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)  # as the Parquet writer does
            predictions.to_csv(args.output, index=False)
        else:
            write_parquet_atomic(predictions, args.output)
        print(f"{len(predictions)} predictions -> {args.output}", file=sys.stderr)
    if not args.output or len(predictions) <= 20:
        for _, p in predictions.iterrows():
            text = p["text"] if len(p["text"]) <= 70 else p["text"][:67] + "..."
            print(f"{p['label'].upper():>9}  {p['probability']:.3f}  {text}")
    return exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
