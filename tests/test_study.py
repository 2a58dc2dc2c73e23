"""The search's Optuna searcher resumed after its driver was killed: Tune's snapshot of the
searcher and the study's journal are written at different moments, and either may be older."""

from __future__ import annotations

import shutil

import pytest

from sentisweep.storage import Store
from sweeps.study import StudyStorage

pytestmark = pytest.mark.unit

optuna = pytest.importorskip("optuna")
tune = pytest.importorskip("ray.tune")


def _searcher(store):
    """The search's own searcher on the study's journal in `store` (sweeps/search.py builds it so)."""
    from sweeps.study import resumable_optuna_search

    return resumable_optuna_search(space={"learning_rate": tune.loguniform(1e-5, 1e-2)}, metric="val_accuracy",
                                   mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
                                   storage=StudyStorage(store, "s").optuna_storage(), study_name="s")


def _trials(store):
    return optuna.load_study(study_name="s", storage=StudyStorage(store, "s").optuna_storage()).trials


def test_a_trial_asked_after_the_studys_last_copy_reports_to_a_trial_asked_again(tmp_path):
    """Object storage: the journal is copied as trials finish; the next trial was asked, Tune
    snapshotted the searcher, and the driver died. The study's copy lacks that trial."""
    store, copy = Store(str(tmp_path)), tmp_path / "copy.journal"
    journal = StudyStorage(store, "s").local
    searcher = _searcher(store)
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"val_accuracy": 0.8})
    shutil.copy(journal, copy)  # the store's copy, after the finished trial
    asked = searcher.suggest("b")
    searcher.save(tmp_path / "searcher.pkl")  # Tune's snapshot, then the kill
    shutil.copy(copy, journal)  # the new driver's disk has the store's copy only

    resumed = _searcher(store)
    resumed.restore(tmp_path / "searcher.pkl")
    resumed.on_trial_result("b", {"val_accuracy": 0.7, "training_iteration": 1})
    resumed.on_trial_complete("b", {"val_accuracy": 0.9})

    trials = _trials(store)
    assert [t.number for t in trials] == [0, 1]
    assert [t.value for t in trials] == [0.8, 0.9]
    assert trials[1].params == asked and trials[1].intermediate_values == {1: 0.7}


def test_a_trial_finished_after_tunes_snapshot_stays_as_it_finished(tmp_path):
    """The other order: Tune's snapshot is older than the study, and Tune runs the trial again."""
    store = Store(str(tmp_path))
    searcher = _searcher(store)
    searcher.suggest("a")
    searcher.save(tmp_path / "searcher.pkl")
    searcher.on_trial_complete("a", {"val_accuracy": 0.8})

    resumed = _searcher(store)
    resumed.restore(tmp_path / "searcher.pkl")
    resumed.on_trial_result("a", {"val_accuracy": 0.5, "training_iteration": 1})
    resumed.on_trial_complete("a", {"val_accuracy": 0.6})

    trials = _trials(store)
    assert [(t.number, t.value, t.state.name) for t in trials] == [(0, 0.8, "COMPLETE")]
