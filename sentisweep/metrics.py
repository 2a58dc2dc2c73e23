"""Classification quality and cost measurements for one trial."""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | int | None]:
    """Accuracy, precision/recall/F1 (binary: of class 1; else the macro mean over the classes
    in the labels or predictions), ROC-AUC (multi-class: one-vs-rest macro), log loss, and
    the confusion counts (binary: tn, fp, fn, tp); the same numbers as scikit-learn's
    functions (tested against them). Counted with numpy here: importing sklearn.metrics
    pulls in scipy.stats, 0.5 s in every trial's fresh process for a few counts."""
    labels = np.asarray(labels).astype(np.int64)  # class indices, also when they arrive as floats
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax drift
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    # confusion[true, predicted]
    confusion = np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, -1)
    true_positives = np.diag(confusion)
    false_positives = confusion.sum(axis=0) - true_positives
    false_negatives = confusion.sum(axis=1) - true_positives
    if num_classes == 2:
        seen = [1]  # binary: precision, recall and F1 of class 1 only
    else:
        seen = np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))
    precision = _mean_ratio(true_positives[seen], true_positives[seen] + false_positives[seen])
    recall = _mean_ratio(true_positives[seen], true_positives[seen] + false_negatives[seen])
    f1 = _mean_ratio(2 * true_positives[seen], 2 * true_positives[seen] + false_positives[seen] + false_negatives[seen])
    picked = probabilities[np.arange(len(labels)), labels]
    out: dict[str, float | int | None] = {
        "accuracy": float(true_positives.sum() / len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": _roc_auc(labels, probabilities),
        "eval_loss": float(-np.log(np.clip(picked, 1e-12, 1)).mean()),
    }
    if num_classes == 2:
        (tn, fp), (fn, tp) = confusion.tolist()
        out.update(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
    return out


def _mean_ratio(numerators: np.ndarray, denominators: np.ndarray) -> float:
    """The mean of numerator / denominator over classes, 0 where the denominator is 0
    (scikit-learn's zero_division=0)."""
    ratios = np.divide(numerators, denominators, out=np.zeros(len(numerators)), where=denominators > 0)
    return float(ratios.mean())


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary: the AUC of class 1's probability. Multi-class: the mean of each class's
    one-vs-rest AUC. None when a class the AUC needs has no positive or no negative row."""
    classes = [1] if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    aucs = []
    for k in classes:
        positive = labels == k
        positives = int(positive.sum())
        negatives = len(labels) - positives
        if positives == 0 or negatives == 0:
            return None
        # Mann-Whitney: the AUC is the share of (positive, negative) pairs ranked right, ties half
        ranks = _average_ranks(probabilities[:, k])
        aucs.append((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    return float(np.mean(aucs))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; equal values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_run = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    run_starts = np.flatnonzero(starts_run)
    run_ends = np.append(run_starts[1:], len(values))
    # a run covering sorted positions start..end-1 holds ranks start+1..end: mean (start+1+end)/2
    run_mean_rank = (run_starts + 1 + run_ends) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = run_mean_rank[np.cumsum(starts_run) - 1]
    return ranks


def host_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class PeakMemory:
    """Peak memory during a block: CUDA max allocated/reserved on GPU, else the host
    process RSS sampled every 20 ms by a thread (ru_maxrss is the process's lifetime
    peak, which would include earlier trials in the same process)."""

    def __init__(self, device: str, interval_s: float = 0.02):
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.reserved_bytes: int | None = None
        self.kind = "cuda_max_allocated" if device == "cuda" else "host_rss_sampled"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":  # pragma: no cover - GPU only
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_bytes = host_rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, host_rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":  # pragma: no cover - GPU only
            import torch

            self.peak_bytes = int(torch.cuda.max_memory_allocated())
            self.reserved_bytes = int(torch.cuda.max_memory_reserved())
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, host_rss_bytes())


def process_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@dataclass
class Stopwatch:
    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
