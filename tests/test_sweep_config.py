"""Sweep configs: validated in full before Ray starts; the --dry-run matrix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sentisweep.config import ConfigError
from sentisweep.plan import expand, load_config, parse_sweep_config, trial_from_sample
from sentisweep.storage import Store

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "sweeps" / "configs").glob("*.yaml"))


def _ablation(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "ablation.py"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.unit
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate_and_open_with_their_command(path):
    assert path.read_text().startswith(("# python sweeps/", "# ray job submit --working-dir . -- python sweeps/",
                                        "# python ray_jobs/", "# ray job submit --working-dir . -- python ray_jobs/"))
    if path.name.startswith("embed_xgb"):
        assert load_config(path, "embed_xgb").models
    elif "search" in path.name:
        search = load_config(path, "search")
        assert trial_from_sample(search, {"r": search.space.r[0], "alpha_multiple": 1, "learning_rate": 1e-4,
                                          "dropout": 0.1}, "t1", Store("/tmp/x")).method.r == search.space.r[0]
    else:
        assert expand(load_config(path, "sweep"), Store("/tmp/x"), "cpu")


@pytest.mark.integration  # a subprocess each
def test_dry_run_prints_the_matrix_and_starts_nothing(tmp_path):
    out = _ablation("--config", "sweeps/configs/smoke.yaml", "--dry-run", "--storage", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "12 trials: 10 to run, 2 skipped" in out.stdout
    assert "| tiny-qwen3__lora-r4-attention__s2 |" in out.stdout
    assert "skip: method 'zero-shot' needs a decoder model; 'tiny-bert' is an encoder" in out.stdout
    assert "dry run: nothing started\n" in out.stdout
    assert not any(tmp_path.iterdir())
    # where a finished sweep's table already is, the dry run says the run would refuse, and why
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "results.parquet").write_bytes(b"a finished sweep's table")
    out = _ablation("--config", "sweeps/configs/smoke.yaml", "--dry-run", "--storage", str(tmp_path))
    assert out.returncode == 2, out.stderr  # as the real run would
    assert "the run would stop here: " in out.stderr and "this sweep finished; choose another --name" in out.stderr


BAD = {
    "unknown model": ("models: [tiny-bert, gpt-9]\nmethods: [full]\n", "models[1] = 'gpt-9': unknown"),
    "unknown method": ("models: [tiny-bert]\nmethods: [fullft]\n",
                       "methods[0].name = 'fullft': unknown; did you mean 'full'? known: dora, full,"),
    "a model twice": ("models: [tiny-bert, tiny-bert]\nmethods: [full]\n",
                      "models = ['tiny-bert', 'tiny-bert']: ['tiny-bert'] listed twice"),
    "a search config": ("model: tiny-bert\nnum_samples: 2\n", "kind = 'search': this is a search config, not a sweep"),
    "empty axis": ("models: []\nmethods: [full]\n", "models = []: List should have at least 1 item"),
    "rank <= 0": ("models: [tiny-bert]\nmethods: [{name: lora, r: 0}]\n", "methods[0].r = 0: LoRA rank must be"),
    "lr <= 0": ("models: [tiny-bert]\nmethods: [full]\ntraining: {learning_rate: 0}\n",
                "training.learning_rate = 0: Input should be greater than 0"),
    "variant lr <= 0": ("models: [tiny-bert]\nmethods: [{name: full, training: {learning_rate: -1}}]\n",
                        "methods[0].learning_rate = -1"),
    "malformed yaml": ("models: [tiny-bert\n", "not valid YAML"),
    "repeated seeds": ("models: [tiny-bert]\nmethods: [full]\nseeds: [1, 1]\n", "repeated seeds"),
    "a method's model not in the sweep": ("models: [tiny-bert]\nmethods: [{name: full, models: [tiny-qwen3]}]\n",
                                          "methods[0].models[0] = 'tiny-qwen3': not one of the sweep's models "
                                          "['tiny-bert']"),
}


@pytest.mark.integration  # a subprocess each
@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_sweep_configs_exit_2_before_ray(case, tmp_path):
    text, expected = BAD[case]
    config = tmp_path / "sweep.yaml"
    config.write_text("# python sweeps/ablation.py --config sweep.yaml\nname: bad\n" + text)
    out = _ablation("--config", str(config), "--storage", str(tmp_path / "store"))
    assert out.returncode == 2
    assert expected in out.stderr, out.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.unit
def test_all_problems_at_once():
    with pytest.raises(ConfigError) as info:
        parse_sweep_config({"models": ["nope"], "methods": [{"name": "lora", "r": -2}, "zzz"]})
    assert len(info.value.problems) == 3


@pytest.mark.unit
def test_variants_expand_with_their_training_overrides(tmp_path):
    sweep = parse_sweep_config({"name": "s", "models": ["tiny-bert"], "seeds": [1, 2], "methods": [
        {"name": "lora", "r": 8, "placement": "attention"},
        {"name": "lora", "r": 8, "placement": "attention", "training": {"learning_rate": 2e-4}}]})
    planned = expand(sweep, Store(str(tmp_path)), "cpu")
    ids = [p.config.trial_id for p in planned]
    assert ids == ["tiny-bert__lora-r8-attention__s1", "tiny-bert__lora-r8-attention__s2",
                   "tiny-bert__lora-r8-attention-lr0.0002__s1", "tiny-bert__lora-r8-attention-lr0.0002__s2"]
    assert planned[2].config.training.learning_rate == 2e-4 and planned[0].config.training.learning_rate == 2e-5
    assert all(Path(p.config.output_dir).is_absolute() and Path(p.config.data.cache_dir).is_absolute()
               for p in planned)


@pytest.mark.unit
def test_a_method_limited_to_some_models_runs_only_on_those(tmp_path):
    # DistilBERT full fine-tuning against Qwen3-4B QLoRA and zero-shot: 3 trials, not the 2 x 3 grid
    sweep = parse_sweep_config({"name": "s", "models": ["tiny-bert", "tiny-qwen3"], "methods": [
        {"name": "full", "models": ["tiny-bert"]}, {"name": "qlora", "r": 4, "models": ["tiny-qwen3"]},
        {"name": "zero-shot", "models": ["tiny-qwen3"]}]})
    planned = expand(sweep, Store(str(tmp_path)), "cpu")
    assert [p.config.trial_id for p in planned] == [
        "tiny-bert__full__s42", "tiny-qwen3__qlora-r4__s42", "tiny-qwen3__zero-shot__s42"]
    assert all(p.skip_reason is None for p in planned)
    assert "models" not in planned[1].config.method.model_dump()  # a trial's method is the method alone


@pytest.mark.unit
def test_gather_results_accounts_for_every_trial(tmp_path):
    """A trial that never wrote its result: `stopped` when the scheduler ended it after a
    validation report, `failed` with Tune's error otherwise; skipped trials keep their reason."""
    sweep = parse_sweep_config({"name": "g", "models": ["tiny-bert", "tiny-qwen3"], "methods": ["full", "zero-shot"]})
    planned = expand(sweep, Store(str(tmp_path)), "cpu")
    ids = [p.config.trial_id for p in planned]
    outcomes = {ids[0]: {"error": None, "metrics": {"val_accuracy": 0.75, "step": 4, "final": False}},
                ids[2]: {"error": "ActorDiedError: the actor died", "metrics": {}}}
    from sentisweep.plan import gather_results

    results = gather_results(planned, Store(str(tmp_path)), outcomes).set_index("trial_id")
    assert results.loc[ids[0], "status"] == "stopped" and results.loc[ids[0], "best_val_accuracy"] == 0.75
    assert results.loc[ids[1], "status"] == "skipped" and "needs a decoder" in results.loc[ids[1], "error"]
    assert results.loc[ids[2], "status"] == "failed" and "ActorDiedError" in results.loc[ids[2], "error"]
    assert results.loc[ids[3], "status"] == "failed" and "never wrote a result" in results.loc[ids[3], "error"]
