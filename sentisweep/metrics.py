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
    """Accuracy, precision/recall/F1 (binary: of class 1; else macro), ROC-AUC, log loss,
    and the confusion counts (binary: tn, fp, fn, tp)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax drift
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    average = "binary" if num_classes == 2 else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average=average, zero_division=0)
    present = np.unique(labels)
    if len(present) < 2:
        roc_auc = None  # undefined with one class in the labels
    elif num_classes == 2:
        roc_auc = float(roc_auc_score(labels, probabilities[:, 1]))
    else:
        roc_auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=list(range(num_classes))))
    confusion = confusion_matrix(labels, predicted, labels=list(range(num_classes)))
    out: dict[str, float | int | None] = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc,
        "eval_loss": float(log_loss(labels, np.clip(probabilities, 1e-12, 1), labels=list(range(num_classes)))),
    }
    if num_classes == 2:
        (tn, fp), (fn, tp) = confusion.tolist()
        out.update(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
    return out


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
