"""Classification quality and cost measurements for one trial."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | int | None]:
    """Accuracy, precision/recall/F1 (binary: of class 1; else the macro mean over the classes
    in the labels or predictions), ROC-AUC (multi-class: one-vs-rest macro; None when a class
    has no positive or no negative row), log loss, and the binary confusion counts."""
    from sklearn import metrics

    labels = np.asarray(labels).astype(np.int64)  # class indices, also when they arrive as floats
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax drift
    classes = list(range(probabilities.shape[1]))
    predicted = probabilities.argmax(axis=1)
    binary = len(classes) == 2
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predicted, average="binary" if binary else "macro", zero_division=0)
    out: dict[str, float | int | None] = {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
        "roc_auc": _roc_auc(labels, probabilities),
        "eval_loss": float(metrics.log_loss(labels, probabilities, labels=classes)),
    }
    if binary:
        (tn, fp), (fn, tp) = metrics.confusion_matrix(labels, predicted, labels=classes).tolist()
        out.update(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
    return out


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    present = np.bincount(labels, minlength=probabilities.shape[1])
    if probabilities.shape[1] == 2:
        return None if present.min() == 0 else float(roc_auc_score(labels, probabilities[:, 1]))
    if (present == 0).any() or (present == len(labels)).any():
        return None
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))


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
        self.start_bytes = 0  # host RSS as the block began: peak - start is what the block added
        self.kind = "cuda_max_allocated" if device == "cuda" else "host_rss_sampled"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":  # pragma: no cover - GPU only
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_bytes = self.start_bytes = host_rss_bytes()
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


@dataclass
class Stopwatch:
    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
