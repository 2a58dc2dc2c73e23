"""Where a search's Optuna study lives. The driver owns it: no file is shared between
machines, so nothing depends on file locking over NFS or SMB (unreliable for sqlite).

- default: Optuna's journal (an append-only log of the study's operations) on the driver's
  own disk. With a local store it is `<storage>/<name>/optuna.journal` itself. With object
  storage (s3://...) it is a file in the driver's temp folder, copied to
  `<storage>/<name>/optuna.journal` after every finished trial and brought back by `--resume`,
  so a driver that starts again on another machine continues the same study.
- `--study-storage postgresql://user:pass@host/db` (any SQLAlchemy URL Optuna takes): a
  database a team runs; then the study is there and nothing is copied.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from sentisweep.layout import STUDY_JOURNAL as JOURNAL
from sentisweep.screen import shown
from sentisweep.storage import Store
from sentisweep.tuning import random_first


class StudyStorage:
    def __init__(self, store: Store, name: str, url: str | None = None):
        self.store, self.name, self.url = store, name, url
        if url:
            self.local = None
        elif not store.remote:
            self.local = Path(store.path(name, JOURNAL))
        else:  # the same path for any driver of this search: its pickled searcher names it
            digest = hashlib.sha256(store.uri(name).encode()).hexdigest()[:16]
            self.local = Path(tempfile.gettempdir()) / "sentisweep-studies" / digest / JOURNAL

    def optuna_storage(self):
        import optuna
        from optuna.storages.journal import JournalFileBackend

        if self.url:
            return optuna.storages.RDBStorage(self.url)
        self.local.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(self.local)))

    @property
    def copied(self) -> bool:
        """The journal lives on the driver's disk and its copy in the store."""
        return self.local is not None and self.store.remote

    def restore(self) -> bool:
        """Before --resume: the store's copy of the journal onto this driver's disk."""
        if not self.copied or not self.store.exists(self.name, JOURNAL):
            return False
        self.local.parent.mkdir(parents=True, exist_ok=True)
        self.store.get_file(self.local, self.name, JOURNAL)
        return True

    def save(self) -> None:
        """The journal to the store (after each finished trial, and at the end)."""
        if self.copied and self.local.is_file():
            self.store.put_file(self.local, self.name, JOURNAL)

    def describe(self) -> str:
        if self.url:
            return f"Optuna study in {self.url.split('@')[-1]} (a database: the password is not shown)"
        if self.copied:
            return f"Optuna study: {self.local} on this driver, copied to {self.store.uri(self.name, JOURNAL)}"
        return f"Optuna study: {shown(str(self.local))}"  # as the lines around it: relative where it is here


def saving_callback(study: StudyStorage):
    """A Tune callback that copies the journal to the store as each trial finishes."""
    from ray import tune  # [Ray]

    class SaveStudy(tune.Callback):  # [Ray]
        def on_trial_complete(self, iteration, trials, trial, **info):
            study.save()

        def on_trial_error(self, iteration, trials, trial, **info):
            study.save()

    return SaveStudy()


def tpe_sampler(trials: int, seed: int):
    """Optuna's TPE for a search of `trials` trials, modelling after `random_first(trials)`."""
    import optuna  # the searcher's own library, imported with it

    return optuna.samplers.TPESampler(n_startup_trials=random_first(trials), seed=seed)


def resumable_optuna_search(**kwargs):
    """Ray Tune's OptunaSearch that a driver killed mid-search can resume. Tune's saved state of
    the search and the study are written at different moments, so either may be the older:
    - the searcher (a trial finished between Tune's last snapshot and the kill): Tune runs that
      trial again, and Optuna refuses results for a trial it has finished. Those are dropped:
      the study keeps the trial as it finished, once.
    - the study (object storage: its copy is made as trials finish, and the next trial was asked
      after it): the searcher holds a trial the study lacks. It is asked again with its own
      values, so that Tune's rerun of it reports to a trial that exists."""
    import optuna  # the searcher's own library, imported with it
    from ray.tune.search.optuna import OptunaSearch  # [Ray]

    class ResumableOptunaSearch(OptunaSearch):  # [Ray]
        def restore(self, checkpoint_path: str):
            storage = self._storage  # this driver's, opened on the journal as it is now
            super().restore(checkpoint_path)
            # the pickled study reads its journal at byte offsets into the file it last saw, wrong
            # where the store's older copy replaced that file: the study is opened afresh
            self._storage = storage
            self._setup_study(self._mode)
            # the journal is append-only, so the study's copy is a prefix of what the searcher saw
            known = {t._trial_id for t in self._ot_study.get_trials(deepcopy=False)}
            for tune_id, ot_trial in self._ot_trials.items():
                if tune_id in self._completed_trials:
                    continue
                if ot_trial._trial_id in known:
                    self._ot_trials[tune_id] = optuna.trial.Trial(self._ot_study, ot_trial._trial_id)
                else:
                    self._ot_study.enqueue_trial(ot_trial.params)
                    self._ot_trials[tune_id] = self._ot_study.ask(fixed_distributions=self._space)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            # several objectives: a trial ASHA stopped reported validation accuracy but no cost yet.
            # Optuna would refuse the partial values and keep the trial running; it was pruned
            if (isinstance(self.metric, list) and result and not error
                    and any(result.get(m) is None for m in self.metric)):
                result = None
            super().on_trial_complete(trial_id, result, error)

        def on_trial_result(self, trial_id: str, result: dict):
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None and self._ot_study.trials[ot_trial.number].state.is_finished():
                return
            super().on_trial_result(trial_id, result)

    return ResumableOptunaSearch(**kwargs)
