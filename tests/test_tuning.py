"""Equal-budget tuning: the spaces and their checks, the choice and its edge flags, the
expected-max curve. The tuned sweep on a real local Ray, reported and resumed, runs as a user types
it: tests/test_user_path.py."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.tuning import expected_max
from sentisweep.config import ConfigError
from sentisweep.config_load import load_config, parse_sweep_config
from sentisweep.plan import expand
from sentisweep.results import gather_results
from sentisweep.screen import matrix_table
from sentisweep.storage import Store
from sentisweep.tuning import (
    Cell,
    apply_choices,
    cell_key,
    cells,
    choose,
    edges,
    reusable,
    sampled_trial,
    variant_space,
)

ROOT = Path(__file__).resolve().parents[1]
TUNED_SMOKE = ROOT / "sweeps" / "configs" / "tuned_smoke.yaml"


def _sweep(**changes):
    raw = yaml.safe_load(TUNED_SMOKE.read_text())
    raw.update(changes)
    return raw


@pytest.mark.unit
def test_expected_max_is_the_mean_of_the_best_over_every_draw():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 0.9, 4)
    curve = expected_max(scores)
    for n in (1, 2, 3):  # every ordered draw of n from the 4 scores, with replacement, equally likely
        brute = np.mean([max(draw) for draw in itertools.product(scores, repeat=n)])
        assert curve[n - 1] == pytest.approx(brute)
    assert curve[0] == pytest.approx(scores.mean()) and np.all(np.diff(curve) >= 0)
    assert expected_max(scores, 50)[-1] == pytest.approx(scores.max(), abs=1e-4)


@pytest.mark.unit
def test_each_method_brings_its_own_learning_rate_range():
    assert variant_space("ia3", None) == {"learning_rate": (1e-3, 5e-2)}
    assert variant_space("full", None)["learning_rate"][1] <= 2e-4  # full fine-tuning's rates are small
    assert variant_space("lora", {"r": [4, 8], "learning_rate": [1e-5, 1e-3]}) == {
        "learning_rate": (1e-5, 1e-3), "r": [4, 8]}


@pytest.mark.unit
@pytest.mark.parametrize("methods, tuning, expected", [
    ([{"name": "lora", "tune": {"rank": [4]}}], {"trials": 2, "eval_steps": 2},
     "methods[0].tune.rank: 'lora' has no parameter 'rank'"),
    ([{"name": "lora", "tune": {"learning_rate": [1e-2, 1e-4]}}], {"trials": 2, "eval_steps": 2},
     "methods[0].tune.learning_rate = [0.01, 0.0001]: need [low, high] with 0 < low < high < 1"),
    ([{"name": "lora", "r": 4, "tune": {"r": [4, 8]}}], {"trials": 2, "eval_steps": 2},
     "methods[0].tune.r: also fixed at 4"),
    ([{"name": "lora", "tune": {"r": 8}}], {"trials": 2, "eval_steps": 2},
     "methods[0].tune.r = 8: give a list of values"),
    ([{"name": "lora", "tune": {"r": [4]}}], None, "methods[0].tune = {'r': [4]}: only used with the sweep's"),
    (["full", {"name": "zero-shot", "tune": {"learning_rate": [1e-4, 1e-3]}}], {"trials": 2, "eval_steps": 2},
     "methods[1].tune = {'learning_rate': [0.0001, 0.001]}: method 'zero-shot' does not train"),
    (["full"], {"trials": 0, "eval_steps": 2}, "tuning.trials = 0"),
    (["full"], {"trials": 2}, "tuning.eval_steps"),
])
def test_a_bad_tuning_section_is_refused_naming_the_field(methods, tuning, expected):
    with pytest.raises(ConfigError) as err:
        parse_sweep_config(_sweep(methods=methods, tuning=tuning))
    assert expected in str(err.value)


@pytest.mark.unit
def test_edges_flag_a_choice_at_the_end_of_its_range():
    space = {"learning_rate": (1e-4, 1e-2), "r": [4, 8, 16]}
    assert edges({"learning_rate": 1e-3, "r": 8}, space) == []
    low, high = edges({"learning_rate": 1.3e-4, "r": 16}, space)
    assert "low edge of [0.0001, 0.01]: widen the range" in low and "r 16 is the largest of [4, 8, 16]" in high
    assert "high edge" in edges({"learning_rate": 9e-3}, space)[0]


def _row(status, lr, r, val, steps):
    return {"status": status, "learning_rate": lr, "method_params": json.dumps({"r": r, "placement": "attention"}),
            "best_val_accuracy": val, "train_steps": steps, "trial_id": f"t{lr}"}


@pytest.mark.unit
def test_the_choice_is_the_best_finished_trial_by_validation():
    sweep = parse_sweep_config(_sweep())
    planned = expand(sweep, Store(str(ROOT / "unused")), "cpu")
    lora = [c for c in cells(sweep, planned) if c.label == "lora-attention"][0]
    rows = pd.DataFrame([_row("ok", 1e-3, 4, 0.80, 8), _row("ok", 2e-3, 8, 0.84, 8),
                         _row("stopped", 3e-3, 2, 0.90, 2)])  # stopped early: not a candidate
    choice = choose(lora, rows)
    assert choice["values"] == {"learning_rate": 2e-3, "r": 8} and choice["val_accuracy"] == 0.84
    assert (choice["trials"], choice["ok"], choice["stopped"], choice["steps"]) == (3, 2, 1, 18)
    none = choose(lora, pd.DataFrame([_row("stopped", 1e-3, 4, 0.8, 2),
                                      {**_row("failed", 1e-3, 4, None, 0), "error": "OSError: disk full\nmore"},
                                      {**_row("failed", 2e-3, 4, None, 0), "error": "OSError: disk full"}]))
    assert none["values"] is None and none["error"] == "no tuning trial finished"
    assert none["trial_errors"] == ["OSError: disk full (2 trials)"]


@pytest.mark.unit
def test_a_cell_whose_tuning_failed_does_not_run_its_seeds_unless_asked():
    sweep = parse_sweep_config(_sweep())
    failed = {cell_key("tiny-bert", "lora-attention"): {"values": None, "error": "no tuning trial finished",
                                                          "trial_errors": ["OSError: disk full (3 trials)"]},
              cell_key("tiny-bert", "full"): {"values": {"learning_rate": 1e-4}}}
    planned = expand(sweep, Store(str(ROOT / "unused")), "cpu")
    apply_choices(planned, failed)
    lora = [t for t in planned if t.config.variant == "lora-attention"]
    assert all(not t.runs and t.tuning == "failed" and "disk full" in t.blocked for t in lora)
    assert "--untuned-fallback" in lora[0].blocked
    full = [t for t in planned if t.config.variant == "full"]
    assert all(t.runs and t.tuning == "chosen" and t.config.training.learning_rate == 1e-4 for t in full)
    rows = gather_results(planned[:1] + lora[:1], Store(str(ROOT / "unused")))
    assert rows["status"].tolist()[-1] == "failed" and rows["error_type"].tolist()[-1] == "TuningFailed"
    assert rows["tuning"].tolist()[-1] == "failed"
    planned = expand(sweep, Store(str(ROOT / "unused")), "cpu")
    apply_choices(planned, failed, untuned_fallback=True)  # asked for: the configured settings, marked
    lora = [t for t in planned if t.config.variant == "lora-attention"]
    assert all(t.runs and t.tuning == "untuned" for t in lora)
    assert all(t.config.training.learning_rate == sweep.training.learning_rate for t in lora)


@pytest.mark.unit
def test_a_tuning_trial_runs_the_cell_in_the_tuning_budget_and_the_choice_every_seed():
    sweep = parse_sweep_config(_sweep(seeds=[5, 6], training={**_sweep()["training"], "max_steps": 40},
                                      tuning={"trials": 3, "max_steps": 8, "eval_steps": 2}))
    planned = expand(sweep, Store(str(ROOT / "unused")), "cpu")
    found = {c.label: c for c in cells(sweep, planned)}
    assert set(found) == {"full", "lora-attention"} and found["full"].base.seed == 5  # the first seed
    trial = sampled_trial(found["lora-attention"], {"learning_rate": 2e-3, "r": 4}, sweep.tuning, sweep.name,
                          "abc", "/out")
    assert (trial.training.max_steps, trial.training.eval_steps, trial.training.learning_rate) == (8, 2, 2e-3)
    assert trial.method.r == 4 and trial.data.test_size == 32 and trial.sweep == "tuned-smoke/tuning"
    assert trial.trial_id == "tiny-bert__lora-attention__s5__abc" and trial.variant == "lora-attention"
    apply_choices(planned, {cell_key("tiny-bert", "lora-attention"): {"values": {"learning_rate": 3e-3, "r": 2}}})
    lora = [t.config for t in planned if t.config.variant == "lora-attention"]
    assert [(c.seed, c.training.learning_rate, c.method.r, c.training.max_steps) for c in lora] == [
        (5, 3e-3, 2, 40), (6, 3e-3, 2, 40)]
    full = [t.config for t in planned if t.config.variant == "full"]
    assert all(c.training.learning_rate == sweep.training.learning_rate for c in full)  # not chosen: as configured
    table = matrix_table(planned, sweep.resources, [], {c.key: c.space for c in found.values()})
    assert "tuned: learning_rate [0.0001, 0.005], r [2, 4, 8]" in table
    # a shorter tuning run is not any seed's run
    chosen = {"values": {"learning_rate": 3e-3, "r": 2}, "trial_id": "x"}
    assert reusable(found["lora-attention"], chosen, sweep.tuning, sweep.name, planned) is None


@pytest.mark.unit
def test_a_tuning_trial_of_the_seeds_own_budget_is_that_seeds_run():
    sweep = parse_sweep_config(_sweep())  # no max_steps; eval_steps as the training's
    planned = expand(sweep, Store(str(ROOT / "unused")), "cpu")
    lora = [c for c in cells(sweep, planned) if c.label == "lora-attention"][0]
    trial = sampled_trial(lora, {"learning_rate": 2e-3, "r": 4}, sweep.tuning, sweep.name, "k", "/out")
    assert trial.data.test_size == 32 and trial.training.keep_checkpoint  # whole: it may become a seed's row
    chosen = {"values": {"learning_rate": 2e-3, "r": 4}, "trial_id": "k"}
    apply_choices(planned, {cell_key("tiny-bert", "lora-attention"): chosen})
    reused = reusable(lora, chosen, sweep.tuning, sweep.name, planned)
    assert reused is not None and reused.config.trial_id == "tiny-bert__lora-attention__s1"
    other = sweep.model_copy(update={"tuning": sweep.tuning.model_copy(update={"eval_steps": 4})})
    assert reusable(lora, chosen, other.tuning, sweep.name, planned) is None  # evaluated otherwise: not the same run


@pytest.mark.unit
def test_the_quick_sweep_tunes_every_method_at_one_budget():
    sweep = load_config(ROOT / "sweeps" / "configs" / "quick.yaml", "sweep")
    planned = expand(sweep, Store(str(ROOT / "unused")), "cpu")
    found = cells(sweep, planned)
    assert sweep.tuning is not None and len(found) == len(sweep.methods)
    assert all(isinstance(c, Cell) and "learning_rate" in c.space for c in found)


@pytest.mark.unit
@pytest.mark.parametrize("trials, random_first", [(3, 2), (6, 2), (50, 10)])
def test_the_search_models_its_trials_after_a_fifth_of_them_are_random(trials, random_first):
    # Optuna's default TPE drew its first 10 trials at random: a 6-trial search never modelled.
    # Two studies told the same first trials with opposite scores: a model's next suggestion follows
    # the better one, so it differs; a random draw (same seed) ignores the scores and is the same.
    import optuna

    from sweeps.study import tpe_sampler

    space = {"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}

    def next_rate(told: int, good_is_small: bool) -> float:
        study = optuna.create_study(direction="maximize", sampler=tpe_sampler(trials, seed=0))
        for number in range(told):  # small and large rates by turns, each a little apart
            small = number % 2 == 0
            study.add_trial(optuna.trial.create_trial(
                params={"learning_rate": (1e-5 if small else 1e-2) * (1 + number / 10)},
                distributions=space, value=0.9 if small == good_is_small else 0.5))
        return study.ask(space).params["learning_rate"]

    # one trial short of the start-up: still at random; at it: the model
    assert next_rate(random_first - 1, True) == next_rate(random_first - 1, False)
    assert next_rate(random_first, True) != next_rate(random_first, False)


@pytest.mark.unit
def test_pareto_front_and_hypervolume():
    from analysis.tradeoffs import hypervolume, pareto_mask

    points = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.6, 0.6]])  # the last is dominated by the third
    assert pareto_mask(points).tolist() == [True, True, True, False]
    reference = np.array([1.1, 1.1])
    # the union of the rectangles from each front point to (1.1, 1.1), by hand:
    # (0, 1): 1.1 x 0.1 = 0.11; (0.5, 0.5) adds 0.6 x 0.5 = 0.30; (1, 0) adds 0.1 x 0.5 = 0.05
    assert hypervolume(points[:3], reference) == pytest.approx(0.46)
    assert hypervolume(points, reference) == pytest.approx(0.46)  # a dominated point adds nothing
    cube = hypervolume(np.array([[0.0, 0.0, 0.0]]), np.full(3, 1.1))
    assert cube == pytest.approx(1.1 ** 3)


@pytest.mark.unit
def test_the_cheapest_trial_within_x_points_of_the_best():
    from analysis.tradeoffs import tradeoffs

    rows = pd.DataFrame({"status": ["ok"] * 4 + ["stopped"], "trial_id": list("abcde"),
                         "best_val_accuracy": [0.90, 0.895, 0.88, 0.70, 0.95],
                         "peak_memory_bytes": [900, 500, 100, 50, 1]})
    found = tradeoffs(rows, ["val_accuracy", "peak_memory_bytes"], within_points=1.0)
    assert found["cheapest"]["trial_id"] == "b" and found["best"] == 0.90  # a stopped trial is not a candidate
    assert found["front"].tolist() == [True, True, True, True]
    assert tradeoffs(rows, ["val_accuracy", "peak_memory_bytes"], within_points=2.5)["cheapest"]["trial_id"] == "c"


@pytest.mark.unit
@pytest.mark.parametrize("objectives, expected", [
    (["peak_memory_bytes"], "must include val_accuracy"),
    (["val_accuracy", "val_accuracy"], "an objective listed twice"),
    (["val_accuracy", "speed"], "objectives.1 = 'speed'"),
])
def test_bad_objectives_are_refused(objectives, expected):
    from sentisweep.config_load import parse_search_config

    raw = yaml.safe_load((ROOT / "sweeps" / "configs" / "search_smoke_multi.yaml").read_text())
    with pytest.raises(ConfigError, match=expected):
        parse_search_config({**raw, "objectives": objectives})


@pytest.mark.unit
def test_a_restored_tuning_keeps_each_cells_asha_scores():
    """Tuner.restore rebuilds the scheduler from tuner.pkl, pickled at the start (ray#30838): the
    driver's callback gives it back its scores at the rungs, so a resumed tuning stops what an
    uninterrupted one would (a fresh one let every trial through the rung it reached first)."""
    from types import SimpleNamespace

    from ray import cloudpickle
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from sweeps.driver import keeps_scheduler_state
    from sweeps.tuning import CELL, per_cell_asha

    scheduler = per_cell_asha(lambda: ASHAScheduler(metric="val_accuracy", mode="max", time_attr="training_iteration",
                                                    max_t=5, grace_period=1, reduction_factor=2))
    callback = keeps_scheduler_state(scheduler)
    at_start = cloudpickle.dumps({"scheduler": scheduler, "callbacks": [callback]})  # as Tune's tuner.pkl

    def first_report(asha, name: str, accuracy: float) -> str:
        trial = SimpleNamespace(trial_id=name, config={CELL: "tiny-bert__lora"})
        asha.on_trial_add(None, trial)
        return asha.on_trial_result(None, trial, {"training_iteration": 1, "val_accuracy": accuracy})

    assert [first_report(scheduler, *t) for t in (("a", 0.8), ("b", 0.9))] == [TrialScheduler.CONTINUE] * 2
    saved = cloudpickle.dumps(callback.get_state())  # Tune's experiment checkpoint, then Ctrl-C
    forgetful = cloudpickle.loads(at_start)
    assert first_report(forgetful["scheduler"], "c", 0.5) == TrialScheduler.CONTINUE  # what a resume did
    restored = cloudpickle.loads(at_start)
    restored["callbacks"][0].set_state(cloudpickle.loads(saved))
    assert first_report(restored["scheduler"], "c", 0.5) == TrialScheduler.STOP  # below the rung's median, 0.85


RESTORED_ASHA = """
import os, sys
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from sentisweep.storage import Store
from sweeps.driver import fit

folder = sys.argv[1]

def trainable(config):
    # c's first attempt dies before it reports; restarted after the restore it reports 0.5 at each
    # of 5 iterations, below a and b (0.8, 0.9): ASHA's first rung (median 0.85) stops it
    if config["name"] == "c" and not os.path.exists(os.path.join(folder, "c_died")):
        open(os.path.join(folder, "c_died"), "w").close()
        raise RuntimeError("dies")
    for _ in range(5):
        tune.report({"val_accuracy": {"a": 0.8, "b": 0.9, "c": 0.5}[config["name"]]})

def setup():
    asha = ASHAScheduler(time_attr="training_iteration", max_t=5, grace_period=1, reduction_factor=2)
    return (tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=asha),
            {"name": tune.grid_search(["a", "b", "c"])})

ray.init(num_cpus=2, include_dashboard=False)
for resume in (False, True):  # one trial at a time (2 CPUs each), in order a, b, c
    grid = fit(trainable, {"cpu": 2}, Store(folder), ("run",), resume, 0, setup)
print(sorted((r.config["name"], r.metrics.get("training_iteration")) for r in grid))
"""


@pytest.mark.ray
def test_a_tuner_restored_by_the_driver_keeps_its_asha_scores(tmp_path):
    """The same through Ray Tune's own restore (sweeps.driver.fit, resume=True): the errored
    trial restarted after the restore is stopped at the first rung, where a forgetful ASHA let
    it run its 5 iterations."""
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT))
    (tmp_path / "restored_asha.py").write_text(RESTORED_ASHA)
    out = subprocess.run([sys.executable, str(tmp_path / "restored_asha.py"), str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[('a', 5), ('b', 5), ('c', 1)]", out.stdout[-2000:]
