"""Sweep configs: validated in full before Ray starts; the --dry-run matrix."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentisweep import exit_codes
from sentisweep.config import ConfigError
from sentisweep.config_load import load_config, parse_sweep_config
from sentisweep.plan import expand, rate_warnings, trial_from_sample
from sentisweep.storage import Store

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "sweeps" / "configs").glob("*.yaml"))
BENCHMARK_CONFIGS = sorted((ROOT / "benchmarks" / "configs").glob("*.yaml"))


def _ablation(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "ablation.py"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.unit
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate_and_open_with_their_command(path):
    assert path.read_text().startswith(("# python sweeps/", "# ray job submit --working-dir . -- python sweeps/",
                                        "# python ray_jobs/", "# ray job submit --working-dir . -- python ray_jobs/"))
    kind = yaml.safe_load(path.read_text()).get("kind")  # every shipped config states it
    assert kind in ("sweep", "search", "embed_xgb"), f"{path.name}: kind = {kind!r}"
    if kind == "embed_xgb":
        assert load_config(path, "embed_xgb").models
    elif kind == "search":
        search = load_config(path, "search")
        assert trial_from_sample(search, {"r": search.space.r[0], "alpha_multiple": 1, "learning_rate": 1e-4,
                                          "dropout": 0.1}, "t1", Store("/tmp/x")).method.r == search.space.r[0]
    else:
        sweep = load_config(path, "sweep")
        planned = expand(sweep, Store("/tmp/x"), "cpu")
        assert planned and rate_warnings(sweep, planned) == []  # each method at a rate that suits it


@pytest.mark.unit
def test_an_untuned_cell_outside_its_methods_usual_rate_is_named():
    sweep = parse_sweep_config({"models": ["tiny-bert"], "seeds": [1, 2],
                                "methods": ["full", "lora", {"name": "ia3", "training": {"learning_rate": 3e-3}}]})
    (warning,) = rate_warnings(sweep, expand(sweep, Store("/tmp/x"), "cpu"))  # the default 2e-5: full's, not LoRA's
    assert warning.startswith("tiny-bert / lora: learning rate 2e-5 is below lora's usual range (1e-4 to 5e-3")


@pytest.mark.unit
@pytest.mark.parametrize("path", CONFIGS + BENCHMARK_CONFIGS, ids=[p.name for p in CONFIGS + BENCHMARK_CONFIGS])
def test_a_configs_first_line_is_a_command_its_script_accepts(path):
    # a header naming a flag the script no longer has (benchmarks/configs said --no-ops 0 long after it
    # went) fails only when someone types it; the script's own parser reads it here, running nothing
    command = path.read_text().splitlines()[0].removeprefix("# ").removeprefix("ray job submit --working-dir . -- ")
    python, script, *args = shlex.split(command.split("   (")[0])
    assert python == "python" and args[:2] == ["--config", str(path.relative_to(ROOT))], command
    module = importlib.import_module(Path(script).with_suffix("").as_posix().replace("/", ".")
                                     .removeprefix("benchmarks."))
    module.build_parser().parse_args(args)  # an unknown flag or a bad value: SystemExit(2)


@pytest.mark.integration  # a subprocess each
def test_dry_run_prints_the_matrix_and_starts_nothing(tmp_path):
    out = _ablation("--config", "sweeps/configs/smoke.yaml", "--dry-run", "--storage", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "12 trials: 10 to run, 2 skipped" in out.stdout
    assert "| tiny-qwen3__lora-r4-attention__s2 |" in out.stdout
    assert "skip: method 'zero-shot' needs a decoder model; 'tiny-bert' is an encoder" in out.stdout
    assert "dry run: nothing started\n" in out.stdout and "WARNING" not in out.stdout
    assert not any(tmp_path.iterdir())
    # where a finished sweep's table already is, the dry run says the run would refuse, and why
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "results.parquet").write_bytes(b"a finished sweep's table")
    out = _ablation("--config", "sweeps/configs/smoke.yaml", "--dry-run", "--storage", str(tmp_path))
    assert out.returncode == 2, out.stderr  # as the real run would
    assert "the run would stop here: " in out.stderr and "a finished run is there; choose another --name" in out.stderr


@pytest.mark.unit
def test_a_resumed_sweeps_matrix_names_the_trials_done_earlier(tmp_path):
    """--resume runs only the trials without a row (Tune's restore); the matrix says which, and
    the driver starts no Ray where none is left (tests/test_user_path.py)."""
    from sentisweep.layout import RESULT_FILE, trial_parts
    from sentisweep.results import finished_earlier
    from sentisweep.screen import matrix_table

    sweep = load_config(ROOT / "sweeps" / "configs" / "smoke.yaml", "sweep")
    store = Store(str(tmp_path))
    planned = expand(sweep, store, "cpu")
    for trial_id in ("tiny-bert__full__s1", "tiny-qwen3__full__s2", "tiny-bert__zero-shot__s1"):  # the last: skipped
        store.write_bytes(b"a row", *trial_parts("smoke", trial_id), RESULT_FILE)
    finished = finished_earlier(planned, store)
    assert finished == {"tiny-bert__full__s1", "tiny-qwen3__full__s2"}
    table = matrix_table(planned, sweep.resources, finished=finished)
    assert "| tiny-bert__full__s1 |" in table.split("done (an earlier run)")[0].splitlines()[-1]
    assert table.count("done (an earlier run)") == 2
    assert table.endswith("12 trials: 8 to run, 2 finished earlier, 2 skipped")
    assert matrix_table(planned, sweep.resources).endswith("12 trials: 10 to run, 2 skipped")
    zero_shot = next(line for line in table.splitlines() if "| tiny-qwen3__zero-shot__s1 |" in line)
    assert "| 0.0002 |" not in zero_shot and "| - |" in zero_shot  # a method that does not train has no rate


@pytest.mark.unit
def test_a_sweep_stopped_while_it_tunes_is_an_unfinished_run(tmp_path):
    """Ctrl-C during a tuned sweep's tuning leaves Tune's state in `<name>/tuning/tune` only: the
    same command must refuse to start over it and --resume must continue it (both started a new
    tuning, as if nothing had run)."""
    from ray_session import guard

    store = Store(str(tmp_path))
    store.write_bytes(b"Tune's state", "quick", "tuning", "tune", "experiment_state.json")
    quick = load_config(ROOT / "sweeps" / "configs" / "quick.yaml", "sweep")
    refusal = guard.check_storage(store, quick, resume=False)
    assert "quick/tuning/tune exists: an unfinished run is there" in refusal and "pass --resume" in refusal
    assert guard.effective_resume(store, "quick", resume=True)
    assert not guard.effective_resume(store, "another", resume=True)  # nothing saved: a new start


@pytest.mark.unit
def test_a_resumed_run_refuses_a_changed_config_and_names_each_change(tmp_path):
    """Tune's restore runs the trials and space it saved, and the trials read the config given now:
    `--resume` under a changed config mixed the two (tests/test_ablation_ray.py; the quick sweep
    with head-only added died in its tuning). The config a run starts with is kept; --resume
    compares, field by field."""
    from ray_session import guard

    store = Store(str(tmp_path))
    quick = load_config(ROOT / "sweeps" / "configs" / "quick.yaml", "sweep")
    assert guard.run_guarded(store, quick, False, lambda: 0) == 0  # a run starts: its config is kept
    store.write_bytes(b"Tune's state", "quick", "tuning", "tune", "experiment_state.json")  # then interrupted
    assert guard.check_storage(store, quick, resume=True) is None
    # where and how wide it runs may change: another machine, another retry
    wider = quick.model_copy(update={"description": "", "max_failures": 3,
                                     "resources": quick.resources.model_copy(update={"max_concurrent": 1})})
    assert guard.check_storage(store, wider, resume=True) is None
    with_head = load_config(ROOT / "sweeps" / "configs" / "quick.yaml", "sweep",
                            {"methods": [*quick.model_dump()["methods"], {"name": "head-only"}], "seeds": [42, 43, 44]})
    refusal = guard.check_storage(store, with_head, resume=True)
    assert refusal.startswith(f"{tmp_path}/quick was started with another config, and --resume continues")
    assert "  - methods[3].name = 'head-only': it started without it\n" in refusal
    assert "  - seeds = [42, 43, 44]: it started with [42, 43]\n" in refusal
    assert refusal.endswith("run the changed config under another --name")
    assert guard.run_guarded(store, quick, True, lambda: 0) == 0  # the same config: resumed, its record kept
    with pytest.raises(exit_codes.BadInput, match="started with another config"):
        guard.dry_run_done(store, with_head, resume=True)  # the dry run says it too
    # a search the same way: Tune's restore keeps its saved num_samples and space
    search = load_config(ROOT / "sweeps" / "configs" / "search_smoke.yaml", "search")
    assert guard.run_guarded(store, search, False, lambda: 0) == 0
    store.write_bytes(b"Tune's state", search.name, "tune", "experiment_state.json")
    more = search.model_copy(update={"num_samples": search.num_samples * 2})
    assert f"  - num_samples = {search.num_samples * 2}: it started with {search.num_samples}\n" in \
        guard.check_storage(store, more, resume=True)


@pytest.mark.unit
def test_a_run_another_driver_runs_now_is_refused(tmp_path):
    """A second driver of a running run (`--resume` in another terminal, a job submitted again)
    ran Tune's saved trials a second time over the same files; the running driver's lock refuses it,
    and a driver that dies, however, lets go of it."""
    from ray_session import guard

    store = Store(str(tmp_path))
    quick = load_config(ROOT / "sweeps" / "configs" / "quick.yaml", "sweep")
    running = f"{tmp_path}/quick is running now: another driver holds {tmp_path}/quick/.driver.lock; wait"

    def while_it_runs():
        store.write_bytes(b"Tune's state", "quick", "tune", "experiment_state.json")
        assert guard.check_storage(store, quick, resume=True).startswith(running)
        assert guard.check_storage(store, quick, resume=False).startswith(running)
        with pytest.raises(exit_codes.BadInput, match="is running now"):
            guard.run_guarded(store, quick, True, lambda: 0)
        return 0

    assert guard.run_guarded(store, quick, False, while_it_runs) == 0
    assert guard.check_storage(store, quick, resume=True) is None  # it ended, and its lock with it
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "quick" / ".driver.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert guard.check_storage(store, quick, resume=True).startswith(running)
    finally:
        holder.kill()  # a driver killed outright (our own child)
        holder.wait()
    assert guard.check_storage(store, quick, resume=True) is None


@pytest.mark.unit
def test_a_folder_that_takes_no_locks_still_runs_and_says_so(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    from ray_session import guard

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    quick = load_config(ROOT / "sweeps" / "configs" / "quick.yaml", "sweep")
    assert guard.run_guarded(Store(str(tmp_path)), quick, False, lambda: 0) == 0  # not 'cannot write to'
    assert "quick/.driver.lock cannot be locked ([Errno 37] No locks available)" in capsys.readouterr().err


BAD = {
    "unknown model": ("models: [tiny-bert, gpt-9]\nmethods: [full]\n", "models[1] = 'gpt-9': unknown"),
    "unknown method": ("models: [tiny-bert]\nmethods: [fullft]\n",
                       "methods[0].name = 'fullft': unknown; did you mean 'full'? known: dora, full,"),
    "a model twice": ("models: [tiny-bert, tiny-bert]\nmethods: [full]\n",
                      "models = ['tiny-bert', 'tiny-bert']: ['tiny-bert'] listed twice"),
    "a search config": ("model: tiny-bert\nnum_samples: 2\n", "kind = 'search': this is a search config, not a sweep"),
    "empty axis": ("models: []\nmethods: [full]\n", "models = []: List should have at least 1 item"),
    "rank <= 0": ("models: [tiny-bert]\nmethods: [{name: lora, r: 0}]\n",
                  "methods[0].r = 0: Input should be greater than 0"),
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
def test_a_number_written_1e_3_is_a_number(tmp_path):
    """YAML 1.1, which PyYAML follows, reads `1e-3` (no dot) as text: a tuned range of them was refused
    as not numbers, and the same rate written 1e-3 and 0.001 made two variants of one trial."""
    config = tmp_path / "sweep.yaml"
    config.write_text("models: [tiny-bert]\nmethods: [{name: lora, tune: {learning_rate: [1e-4, 1e-2]}}]\n"
                      "tuning: {trials: 2, eval_steps: 2}\ntraining: {learning_rate: 1E-3}\n")
    sweep = load_config(config, "sweep")
    assert sweep.methods[0].tune == {"learning_rate": [1e-4, 1e-2]} and sweep.training.learning_rate == 1e-3
    config.write_text("models: [tiny-bert]\nmethods: [{name: lora, training: {learning_rate: 1e-3}},\n"
                      "  {name: lora, training: {learning_rate: 0.001}}]\n")
    with pytest.raises(ConfigError, match=r"variants \['lora-lr0.001'\] appear twice"):
        load_config(config, "sweep")


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
    from sentisweep.results import gather_results

    results = gather_results(planned, Store(str(tmp_path)), outcomes).set_index("trial_id")
    assert results.loc[ids[0], "status"] == "stopped" and results.loc[ids[0], "best_val_accuracy"] == 0.75
    assert results.loc[ids[1], "status"] == "skipped" and "needs a decoder" in results.loc[ids[1], "error"]
    assert results.loc[ids[2], "status"] == "failed" and "ActorDiedError" in results.loc[ids[2], "error"]
    assert results.loc[ids[3], "status"] == "failed" and "never wrote a result" in results.loc[ids[3], "error"]


GPU_CONFIGS = ["distilbert_vs_qwen3.yaml", "imdb_peft_ablation.yaml", "roberta_methods.yaml"]


@pytest.fixture
def imdb_mirror(tmp_path, monkeypatch):
    """A stand-in for the Hub's IMDb (`data.source: imdb`), wherever the tests run."""
    from helpers import synthetic_reviews

    (tmp_path / "mirror" / "imdb").mkdir(parents=True)
    synthetic_reviews(40, 1).to_parquet(tmp_path / "mirror" / "imdb" / "train.parquet")
    synthetic_reviews(20, 2).to_parquet(tmp_path / "mirror" / "imdb" / "test.parquet")
    monkeypatch.setenv("SENTISWEEP_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.chdir(ROOT)


@pytest.mark.unit
@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_shipped_gpu_configs_build_and_fit_an_80_gib_gpu(name, imdb_mirror, tmp_path, capsys):
    """Every trial's model x method builds from the registry's architecture (its placements
    exist there) and its memory estimate fits an 80 GiB GPU: the dry run says so, on CPU."""
    from sweeps.ablation import main

    assert main(["--config", f"sweeps/configs/{name}", "--dry-run", "--gpu-memory", "80",
                 "--storage", str(tmp_path / "store")]) == 0, capsys.readouterr().err
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "GiB" in line]
    assert rows and all(float(row.split("|")[8].split()[0]) < 80 for row in rows)


@pytest.mark.unit
def test_on_a_cluster_the_memory_check_reads_a_gpu_nodes_gpu(imdb_mirror, tmp_path, monkeypatch, capsys):
    """Issue 37: the check read the driver's GPU, and a cluster's driver sits on a head without one,
    so it never ran there. It reads a GPU node's GPU once Ray is up, before any trial runs."""
    from sweeps import ablation

    config = yaml.safe_load((ROOT / "sweeps" / "configs" / "distilbert_vs_qwen3.yaml").read_text())
    config["resources"]["gpus_per_trial"] = "auto"
    path = tmp_path / "auto.yaml"
    path.write_text("# python sweeps/ablation.py --config auto.yaml\n" + yaml.safe_dump(config))
    args = ablation.build_parser().parse_args(["--config", str(path), "--storage", str(tmp_path / "s")])
    sweep, _, planned = ablation.plan(args)  # no GPU here, none said: nothing to check against yet
    assert all(t.gpus == 1.0 for t in planned if t.skip_reason is None)
    monkeypatch.setattr(ablation, "gpu_memory_of_a_gpu_node", lambda: 80 * 2**30)
    shares = ablation.check_memory_on_a_gpu_node(sweep, planned)
    assert "memory check against the cluster's GPU (80.0 GiB): every trial fits" in capsys.readouterr().out
    assert shares and min(shares.values()) == 0.125  # DistilBERT's 2.4 GiB: one eighth of 80
    monkeypatch.setattr(ablation, "gpu_memory_of_a_gpu_node", lambda: 4 * 2**30)
    with pytest.raises(ConfigError, match=r"against the cluster's GPU \(4.0 GiB\)"):
        ablation.check_memory_on_a_gpu_node(sweep, planned)
    monkeypatch.setattr(ablation, "gpu_memory_of_a_gpu_node", lambda: None)  # GPUs declared, none there
    assert ablation.check_memory_on_a_gpu_node(sweep, planned) is None


@pytest.mark.unit
def test_an_estimate_must_leave_a_margin_of_its_gpu(imdb_mirror, tmp_path):
    """Issue 37: an estimate of 21.6 GiB was called a fit on a 24 GB card, with nothing left for
    what the planner does not count. An estimate over 90% of its GPU share is refused."""
    from sentisweep.plan import FIT_SHARE, plan_memory
    from sweeps import ablation

    args = ablation.build_parser().parse_args(["--config", "sweeps/configs/distilbert_vs_qwen3.yaml",
                                               "--storage", str(tmp_path / "s")])
    sweep, _, planned = ablation.plan(args)  # no GPU known here: nothing refused yet
    (full,) = [t for t in planned if t.config.method.name == "full"]
    need = full.memory.total
    assert plan_memory([full], sweep.resources, int(need / (FIT_SHARE - 0.02))) == []
    (problem,) = plan_memory([full], sweep.resources, int(need / (FIT_SHARE + 0.02)))
    assert full.config.trial_id in problem and "90% of it for what the planner counts" in problem


@pytest.mark.unit
def test_qwen3_4b_qlora_checkpoints_and_leaves_half_a_24_gb_card(imdb_mirror, tmp_path, capsys):
    """Issue 37: the 4-bit trial lost checkpointing when it stopped being forced, and its 21.6 GiB
    estimate called a 24 GB card a fit with nothing left for what the planner does not count."""
    from sweeps.ablation import main

    assert main(["--config", "sweeps/configs/distilbert_vs_qwen3.yaml", "--dry-run", "--gpu-memory", "24",
                 "--storage", str(tmp_path / "store")]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "__qlora-r32__" in line]
    assert float(row.split("|")[8].split()[0]) < 12
    config = yaml.safe_load((ROOT / "sweeps" / "configs" / "distilbert_vs_qwen3.yaml").read_text())
    (qlora,) = [m for m in config["methods"] if m["name"] == "qlora"]
    assert qlora["training"]["gradient_checkpointing"] is True


@pytest.mark.unit
def test_a_trial_too_large_for_its_gpu_is_refused_before_ray(imdb_mirror, tmp_path, capsys):
    from sweeps.ablation import main

    config = yaml.safe_load((ROOT / "sweeps" / "configs" / "distilbert_vs_qwen3.yaml").read_text())
    config["methods"].append({"name": "full", "label": "qwen-full", "models": ["Qwen/Qwen3-4B"]})
    path = tmp_path / "big.yaml"
    path.write_text("# python sweeps/ablation.py --config big.yaml\n" + yaml.safe_dump(config))
    assert main(["--config", str(path), "--dry-run", "--gpu-memory", "24", "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "Qwen_Qwen3-4B__qwen-full__s42: needs about" in err and "holds 24.0 GiB (1 of 24.0 GiB)" in err
    assert "distilbert" not in err  # the trials that fit are not named


@pytest.mark.unit
def test_auto_gpu_shares_follow_each_trials_estimate(data_dir, tmp_path, capsys, monkeypatch):
    from sweeps.ablation import main

    monkeypatch.chdir(ROOT)
    config = yaml.safe_load((ROOT / "sweeps" / "configs" / "smoke.yaml").read_text())
    config["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": "auto"}
    config["data"]["source"] = str(data_dir)
    # DistilBERT (the registry knows its shape offline): full fine-tuning about 2.4 GiB, LoRA less
    config["models"], config["methods"] = ["distilbert-base-uncased"], ["full", {"name": "lora", "r": 4}]
    path = tmp_path / "auto.yaml"
    path.write_text("# python sweeps/ablation.py --config auto.yaml --local --num-gpus 1\n" + yaml.safe_dump(config))
    assert main(["--config", str(path), "--dry-run", "--gpu-memory", "8", "--storage", str(tmp_path / "s")]) == 0
    shares = {row.split("|")[2].strip(): float(row.split("|")[7].split(",")[1].split()[0])
              for row in capsys.readouterr().out.splitlines() if row.startswith("| ") and " GPU |" in row}
    assert shares and set(shares.values()) <= {k / 8 for k in range(1, 9)}
    assert len(set(shares.values())) > 1  # full fine-tuning takes a larger share than LoRA or zero-shot


@pytest.mark.unit
def test_one_models_tokenizer_failing_stops_only_its_trials(data_dir, cache_dir, tmp_path, monkeypatch, capsys):
    """A missing tokenizer library (DeBERTa-v3 without sentencepiece) used to abort the whole
    study before Ray started; now the other models are tokenized and only its trials fail."""
    import transformers

    from sentisweep.trial.models import get_model_spec, materialize
    from sentisweep.trial.tokenization import CACHE_STATS
    from sweeps.driver import pretokenize

    # a second model with a tokenizer of its own: tiny-bert's folder (the tiny models share MiniLM's)
    folder = materialize(get_model_spec("tiny-bert"), tmp_path / "models")
    sweep = parse_sweep_config({"name": "t", "models": ["tiny-bert", folder], "methods": ["full"],
                                "data": {"source": str(data_dir), "train_size": 32, "eval_size": 8, "test_size": 8,
                                         "cache_dir": str(tmp_path / "cache")},
                                "training": {"max_length": 48}})
    planned = expand(sweep, Store(str(tmp_path)), "cpu")
    real = transformers.AutoTokenizer.from_pretrained
    calls = []

    def tokenizer(source, *args, **kwargs):
        calls.append(source)
        if len(calls) == 1:
            raise ValueError("SentencePieceExtractor requires the SentencePiece library but it was not found")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    misses = CACHE_STATS["misses"]
    pretokenize([t.config for t in planned])  # does not raise
    assert "warning: could not tokenize for" in capsys.readouterr().err
    assert CACHE_STATS["misses"] == misses + 3  # the other model's three splits


@pytest.mark.unit
def test_a_ctrl_c_while_ray_shuts_down_at_exit_is_one_line(monkeypatch, capsys):
    # Ray's own atexit shutdown printed a KeyboardInterrupt traceback under a finished run's final screen
    import ray

    from ray_session.connect import shut_down_at_exit

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "shutdown", interrupted)
    shut_down_at_exit()
    assert capsys.readouterr().err == "\nCtrl-C while Ray shut down at exit: the lines above stand\n"
