"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sentisweep.trial.metrics import PeakMemory, classification_metrics

pytestmark = pytest.mark.unit


def test_binary_metrics_by_hand():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p_pos = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.7])
    m = classification_metrics(labels, np.stack([1 - p_pos, p_pos], axis=1))
    # predicted: 1 1 0 0 1 0 0 1 -> tp 3 (rows 0,1,7), fn 1 (row 2), fp 1 (row 4), tn 3
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # ROC-AUC: of the 16 (positive, negative) pairs, those ranked right: 0.9, 0.8, 0.7 beat all
    # 4 negatives (12); 0.3 beats 0.2 and 0.1 (2) -> 14 / 16
    assert m["roc_auc"] == pytest.approx(14 / 16)
    expected_loss = -np.mean(np.log(np.where(labels == 1, p_pos, 1 - p_pos)))
    assert m["eval_loss"] == pytest.approx(expected_loss)


def test_roc_auc_undefined_with_one_class():
    m = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert m["roc_auc"] is None and m["accuracy"] == 0.5


def test_multiclass_macro():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 2, 1]] * 0.7 + 0.1
    m = classification_metrics(labels, probabilities)
    assert m["accuracy"] == 0.75 and "tp" not in m
    # per class recall 1, 1, 0.5 -> macro 0.8333; precision 1, 0.5, 1 -> 0.8333
    assert m["recall"] == pytest.approx(2.5 / 3) and m["precision"] == pytest.approx(2.5 / 3)


def test_peak_memory_sees_a_short_allocation():
    # freed at once: a sampling thread would miss it, the kernel's high-water mark does not
    with PeakMemory("cpu") as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
        del block
    assert memory.kind == "host_rss_peak" and memory.peak_bytes - memory.start_bytes > 60 * 2**20


def test_peak_memory_samples_where_the_peak_cannot_be_reset(monkeypatch):
    from sentisweep.trial import metrics

    monkeypatch.setattr(metrics, "reset_host_peak", lambda: False)
    with PeakMemory("cpu", interval_s=0.005) as memory:
        block = np.ones(64 * 2**20 // 8)
        block.sum()
        import time

        time.sleep(0.05)
        del block
    assert memory.kind == "host_rss_sampled" and memory.peak_bytes > 64 * 2**20


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_the_same_numbers_as_scikit_learn(num_classes):
    from sklearn import metrics as sk

    rng = np.random.default_rng(num_classes)
    for rows in (7, 200):
        labels = rng.integers(0, num_classes, rows)
        labels[:num_classes] = np.arange(num_classes)  # every class present
        # rounded: many ties, which the ROC-AUC must share out as scikit-learn does
        probabilities = np.round(rng.dirichlet(np.ones(num_classes), rows), 1) + 1e-3
        m = classification_metrics(labels, probabilities)
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # as classification_metrics does
        predicted = probabilities.argmax(axis=1)
        average = "binary" if num_classes == 2 else "macro"
        precision, recall, f1, _ = sk.precision_recall_fscore_support(labels, predicted, average=average,
                                                                      zero_division=0)
        auc = (sk.roc_auc_score(labels, probabilities[:, 1]) if num_classes == 2 else
               sk.roc_auc_score(labels, probabilities, multi_class="ovr", labels=list(range(num_classes))))
        expected = {"accuracy": sk.accuracy_score(labels, predicted), "precision": precision, "recall": recall,
                    "f1": f1, "roc_auc": auc,
                    "eval_loss": sk.log_loss(labels, probabilities, labels=list(range(num_classes)))}
        assert {k: m[k] for k in expected} == pytest.approx(expected, rel=1e-9)
        if num_classes == 2:
            (tn, fp), (fn, tp) = sk.confusion_matrix(labels, predicted).tolist()
            assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)


def test_a_class_never_predicted_counts_zero_like_scikit_learn():
    from sklearn import metrics as sk

    labels = np.array([0, 1, 2, 2, 1])
    probabilities = np.eye(3)[[0, 0, 0, 1, 1]] * 0.8 + 0.1  # class 2 never predicted
    m = classification_metrics(labels, probabilities)
    precision, recall, f1, _ = sk.precision_recall_fscore_support(labels, probabilities.argmax(axis=1),
                                                                  average="macro", zero_division=0)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((precision, recall, f1))


def test_float_labels_count_as_classes():
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    as_ints = classification_metrics(np.array([0, 1, 1]), probabilities)
    assert classification_metrics(np.array([0.0, 1.0, 1.0]), probabilities) == as_ints
