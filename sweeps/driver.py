"""What the sweep's and the search's drivers share: their flags, the store, the cluster check,
the one Tuner builder, and the end (baselines, the table, the last screen). Ray-specific lines
are marked `# [Ray]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ray_session import guard
from ray_session.autoscale import ask_for_room
from ray_session.connect import connect
from sentisweep import exit_codes
from sentisweep.config import ConfigError, TrialConfig
from sentisweep.layout import RESULTS_TABLE, TUNE_FOLDER
from sentisweep.screen import elapsed, final_screen, shown
from sentisweep.storage import Store

CONFIGS = Path(__file__).resolve().parent / "configs"  # the shipped configs, found from any directory


def number_from(low: float, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number at least `low` (above it, where `above`); argparse names the flag."""
    def number(text: str) -> float:
        value = float(text)  # argparse turns a ValueError into "invalid number value"
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text}: must be {'above' if above else 'at least'} {low:g}")
        return value
    number.__name__ = "number"
    return number


def parser(prog: str, description: str, what: str, default_config: str, epilog: str) -> argparse.ArgumentParser:
    """The flags every driver takes; the caller adds its own. `default_config`: a file in CONFIGS."""
    default_config = shown(str(CONFIGS / default_config))  # sweeps/configs/... from the checkout's root
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=default_config, help=f"{what} YAML (default {default_config})")
    p.add_argument("--storage", default="results",
                   help="results folder (default ./results, relative to where you run the command) or s3://...")
    p.add_argument("--name", help=f"{what} name (default: the config's name); results go to <storage>/<name>")
    p.add_argument("--resume", action="store_true",
                   help=f"continue an interrupted {what}: only unfinished trials run")
    p.add_argument("--dry-run", action="store_true", help=f"validate, print the {what}'s plan, start nothing")
    p.add_argument("--local", action="store_true",
                   help="one machine: start Ray here even if RAY_ADDRESS is set; trials queue on its GPU/CPUs")
    p.add_argument("--num-gpus", type=number_from(0), default=None,
                   help="GPUs Ray may schedule on with --local (default: what torch sees)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--wait-for-nodes", type=number_from(0), metavar="MINUTES",
                   help="when no node can run a trial now, wait this long for the autoscaler to add one "
                        "(default 30 where an autoscaler runs; without one such a sweep is refused at once "
                        "unless this is given: nodes added by hand, or by a scaler Ray does not see)")
    p.add_argument("--mlflow-uri", help="also log every trial to MLflow (e.g. sqlite:///abs/path/mlflow.db or "
                                        "http://host:5000; needs the mlflow extra)")
    return p


def overrides(args, **more) -> dict:
    """The config fields the flags set (--name, --max-concurrent and the caller's)."""
    found = {k: v for k, v in (("name", args.name), *more.items()) if v is not None}
    if args.max_concurrent is not None:
        found["resources"] = {"max_concurrent": args.max_concurrent}
    return found


def pretokenize(configs: list[TrialConfig]) -> None:
    """Tokenize once per (tokenizer, max_length, truncation) for a whole sweep or search before its
    trials start, so trials started together read the cache instead of each building it."""
    from transformers import AutoTokenizer

    from sentisweep.trial.data import load_task_data
    from sentisweep.trial.methods import get_method
    from sentisweep.trial.models import get_model_spec
    from sentisweep.trial.tokenization import tokenize_frame

    done: set[tuple] = set()
    data = None
    for c in configs:
        if not get_method(c.method.name).trains:
            continue
        tokenizer_source = get_model_spec(c.model).resolve_tokenizer()
        key = (tokenizer_source, c.training.max_length, c.data.truncation, c.data.head_share)
        if key in done:
            continue
        data = data or load_task_data(c.data)  # bad data stops the sweep: every trial needs it
        done.add(key)
        rows = sum(len(frame) for frame in data.splits.values())
        print(f"tokenizing {rows:,} texts for {c.model} at max_length {c.training.max_length}, or reading an "
              "earlier run's tokens from the cache ...", flush=True)
        started = time.monotonic()
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
            for frame in data.splits.values():
                tokenize_frame(frame, tokenizer, tokenizer_source, c.training.max_length, c.data.cache_dir,
                               c.data.truncation, c.data.head_share)
        except Exception as err:  # one model's tokenizer (a missing library, no access) stops only its trials
            print(f"warning: could not tokenize for {tokenizer_source}: {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:300]}; its trials will fail with this error", file=sys.stderr)
            continue
        print(f"  done in {elapsed(time.monotonic() - started)}", flush=True)


def open_store(location: str) -> Store:
    try:
        return Store(location)
    except Exception as err:  # pyarrow: unknown scheme, missing credentials; a file, not a folder
        raise ConfigError([f"--storage = {location!r}: {err}"]) from None


def start_ray(args, cpus_per_trial: float, gpus_per_trial: float, trials: int) -> Callable[[], None]:
    """Join or start Ray and refuse work no trial of which could ever start, before any tokenizing
    or download; where the autoscaler must add a node, ask for it and return the wait for it, so
    the driver prepares while the node boots (ray_session/autoscale.py)."""
    connect(args.local, args.num_gpus)  # [Ray]
    return ask_for_room(cpus_per_trial, gpus_per_trial, trials, args.wait_for_nodes)  # [Ray]


def fit(trial_fn, resources, store: Store, folder: tuple[str, ...], resume: bool, max_failures: int,
        setup, callbacks=()):
    """The one Tuner of a sweep, a search or a sweep's tuning, in `<store>/<folder>/tune`: a new
    one from `setup()` -> (TuneConfig, param space), or with `resume` the saved one (unfinished
    and errored trials run again; its searcher and scheduler are Tune's saved ones); fitted, with
    Ctrl-C a KeyboardInterrupt after Tune saved its state. Returns the ResultGrid."""
    from ray import tune  # [Ray]

    # No per-trial JSON, CSV and TensorBoard files from Tune in the driver's folder: with a remote
    # store, every save of the experiment (each >= 10 s) uploads that whole folder again, so its
    # uploads grow with trials squared (on the simulated cluster, 300 no-op trials took 1.10 s a
    # trial with them and 0.91 s without; benchmarks/README.md). A trial writes its own events.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # [Ray] documented in Tune's environment variables
    # The ResultGrid then finds no per-trial result.json / progress.csv to build its metrics tables
    # from and warns once per trial; we read each trial's last metrics (`trainable.outcomes`), not those
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # [Ray]
    trial_fn = tune.with_resources(trial_fn, resources)  # [Ray] a dict, or a function of the trial's config
    path = store.path(*folder, TUNE_FOLDER)
    if resume and tune.Tuner.can_restore(path, storage_filesystem=store.fs):  # [Ray]
        print(f"continuing the Tune run saved in {store.uri(*folder, TUNE_FOLDER)}: its finished trials are kept",
              flush=True)
        tuner = tune.Tuner.restore(path, trainable=trial_fn, resume_unfinished=True,  # [Ray]
                                   restart_errored=True, storage_filesystem=store.fs)
    else:
        tune_config, param_space = setup()
        if tune_config.scheduler is not None:
            callbacks = [*callbacks, keeps_scheduler_state(tune_config.scheduler)]
        tuner = tune.Tuner(  # [Ray]
            trial_fn, param_space=param_space, tune_config=tune_config,
            run_config=tune.RunConfig(  # [Ray]
                name=TUNE_FOLDER, storage_path=store.path(*folder), storage_filesystem=store.fs,
                # a status table every 30 s and each trial's config as it starts, not each of its reports
                # as well (Tune's default when unset, verbose=2, prints those too)
                verbose=1, callbacks=list(callbacks),
                failure_config=tune.FailureConfig(max_failures=max_failures),  # [Ray]
                # a resumable trial's latest checkpoint only: a retry needs no other
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))  # [Ray]
    return guard.Interruption().fit(tuner)  # [Ray] Tuner.fit, KeyboardInterrupt on Ctrl-C


def keeps_scheduler_state(scheduler):
    """A Tune callback that saves `scheduler`'s state with the experiment and gives it back on
    Tuner.restore, which otherwise rebuilds the scheduler as it was at the start
    (ray-project/ray#30838). Without it a resumed ASHA had forgotten every score at its rungs and
    let trials run on that it would have stopped: the quick sweep resumed while it tuned ran
    LoRA's lr 1.64e-3 its whole 125 steps, where uninterrupted ASHA stopped it at step 32. The
    callback and the scheduler are pickled together in Tune's tuner.pkl, so the restored callback
    holds the restored scheduler."""
    from ray.tune import Callback  # [Ray]

    class KeepSchedulerState(Callback):  # [Ray]
        def get_state(self) -> dict:
            return {"scheduler": dict(scheduler.__dict__)}

        def set_state(self, state: dict) -> None:
            scheduler.__dict__.update(state["scheduler"])

    return KeepSchedulerState()


def finish(title: str, trials, config, store: Store, started: float, sections: list[str],
           warnings: list[str]):
    """The trials' rows plus the config's baselines, written as `<name>/results.parquet`, and the
    last screen. Returns every row."""
    from sentisweep.probe.baselines import with_baselines  # sklearn: only once the trials are done

    results = with_baselines(trials, config.baselines, config.data, config.name, store)
    where = store.write_frame(results, config.name, RESULTS_TABLE)
    print(final_screen(title, results, store.uri(config.name), where, time.monotonic() - started,
                       sections, warnings))
    return results


def exit_status(results, found_nothing: bool) -> int:
    if found_nothing:
        return exit_codes.TUNING_FAILED
    return exit_codes.FAILED if (results["status"] == "failed").any() else exit_codes.OK
