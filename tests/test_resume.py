"""A resumable trial started again from its checkpoint continues where that checkpoint was:
same optimizer, scheduler, data order and random state, so it ends as if never stopped."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from helpers import tiny_trial
from transformers import TrainerCallback

from sentisweep.config import ConfigError
from sentisweep.config_load import parse_trial_config
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.unit


class Preempted(Exception):
    pass


class PreemptAfterSave(TrainerCallback):
    """Keeps the checkpoint saved at `step` (as Tune would upload it), then kills the run."""

    def __init__(self, step: int, keep):
        self.step, self.keep = step, keep

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            shutil.copytree(f"{args.output_dir}/checkpoint-{self.step}", self.keep)
            raise Preempted(f"node lost after step {self.step}")


def _config(data_dir, cache_dir, out, **training):
    settings = {"max_steps": 8, "eval_steps": 4, "batch_size": 16, "resumable": True, **training}
    return parse_trial_config(tiny_trial("tiny-bert", {"name": "lora", "r": 4, "placement": "attention"},
                                         data_dir, cache_dir, out, **settings))


def test_resumed_trial_ends_as_if_never_stopped(data_dir, cache_dir, tmp_path):
    # Stopped at an epoch's end (64 rows / 16 = 4 steps). Stopped mid-epoch, a run resumes at
    # the same step too, but the Trainer draws the rest of that epoch's order anew from the
    # restored random state: equivalent, not identical.
    whole = run_trial(_config(data_dir, cache_dir, tmp_path / "whole"))
    assert whole.status == "ok" and whole.resumed_from_step is None

    saved = tmp_path / "saved-checkpoint"
    stopped = run_trial(_config(data_dir, cache_dir, tmp_path / "stopped"), callbacks=[PreemptAfterSave(4, saved)])
    assert stopped.status == "failed" and "node lost after step 4" in stopped.error
    assert (saved / "optimizer.pt").is_file()  # resumable: the optimizer's state is in the checkpoint

    resumed = run_trial(_config(data_dir, cache_dir, tmp_path / "resumed"), resume_from=saved)
    assert resumed.status == "ok" and resumed.resumed_from_step == 4
    history = pd.read_parquet(resumed.history_path)
    assert history["step"].max() == 8
    # steps 5-8 ran again from step 4's state: the same losses and the same final model
    losses = [pd.read_parquet(r.history_path).dropna(subset=["loss"]).set_index("step")["loss"]
              for r in (whole, resumed)]
    pd.testing.assert_series_equal(losses[0].loc[5:8], losses[1].loc[5:8], rtol=1e-5)
    assert resumed.accuracy == whole.accuracy and resumed.eval_loss == pytest.approx(whole.eval_loss, rel=1e-5)


def test_without_resumable_the_checkpoint_holds_the_model_only(data_dir, cache_dir, tmp_path):
    saved = tmp_path / "saved-checkpoint"
    run_trial(_config(data_dir, cache_dir, tmp_path / "t", resumable=False), callbacks=[PreemptAfterSave(4, saved)])
    assert not (saved / "optimizer.pt").exists()


def test_resumable_without_evaluations_is_refused(data_dir, cache_dir, tmp_path):
    raw = tiny_trial("tiny-bert", "full", data_dir, cache_dir, tmp_path, resumable=True, eval_each_epoch=False)
    with pytest.raises(ConfigError, match="resumable"):
        parse_trial_config(raw)


def test_building_a_tiny_model_leaves_the_random_state_alone(tmp_path):
    """The first trial of a tiny model builds it (seed 0 for its weights); that must not reseed
    the trial, or its head would differ from a later trial's with the same seed."""
    import torch

    from sentisweep.trial.models import get_model_spec, materialize

    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    materialize(get_model_spec("tiny-bert"), tmp_path)
    assert torch.equal(before, torch.random.get_rng_state())
