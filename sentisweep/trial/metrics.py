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


def reset_host_peak() -> bool:
    """Reset the kernel's record of this process's peak RSS (VmHWM); False where Linux does not
    allow it (not Linux, or /proc read-only). The kernel sees every page fault: no sampling
    thread can miss a short peak, such as the moment between a forward pass and its backward."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak RSS (proc(5), Linux 4.0+)
    except OSError:
        return False
    return True


def host_peak_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise OSError("no VmHWM in /proc/self/status")


class PeakMemory:
    """Peak memory during a block: CUDA max allocated/reserved on GPU; on CPU the process's peak
    RSS as the kernel records it, reset as the block begins (`host_rss_peak`), or where that
    cannot be reset the RSS sampled every 20 ms by a thread (`host_rss_sampled`; ru_maxrss is the
    process's lifetime peak, which would include earlier trials in the same process)."""

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
            return self
        self.peak_bytes = self.start_bytes = host_rss_bytes()
        if reset_host_peak():
            self.kind = "host_rss_peak"
        else:
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
        elif self._thread is None:
            self.peak_bytes = max(self.peak_bytes, host_peak_bytes())
        else:
            self._stop.set()
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
