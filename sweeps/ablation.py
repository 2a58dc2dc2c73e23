"""The model x method x seed ablation on Ray Tune.

    python sweeps/ablation.py                                   # the quick CPU sweep
    python sweeps/ablation.py --config sweeps/configs/smoke.yaml --dry-run
    ray job submit --working-dir . -- python sweeps/ablation.py --config sweeps/configs/smoke.yaml

Everything Ray-specific is marked `# [Ray]`; one trial is `sentisweep.trial.run.run_trial`,
plain Python. Results: `<storage>/<name>/results.parquet`, one row per trial whatever its
status, beside Ray Tune's experiment folder `<storage>/<name>/tune`. A config with `tuning:`
first searches each (model, method) cell at an equal budget (sweeps/tuning.py), then runs the
seeds at each cell's choice.
"""

from __future__ import annotations

import argparse
import sys
import time

from ray_session import guard, tracking
from ray_session.connect import ask_autoscaler, connect, unsatisfiable
from sentisweep import exit_codes
from sentisweep.config import ConfigError, SweepConfig
from sentisweep.locations import pin_args
from sentisweep.plan import (
    PlannedTrial,
    expand,
    gather_results,
    load_config,
    matrix_table,
    plan_memory,
)
from sentisweep.screen import final_screen
from sentisweep.storage import Store
from sentisweep.trial.data import DataError, check_data
from sentisweep.tuning import apply_choices, budget_text, cells, describe_choice
from sweeps import trainable, tuning

DEFAULT_CONFIG = "sweeps/configs/quick.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/ablation.py",
        description="Run every model x method x seed trial of a sweep config on Ray Tune and gather "
                    "one results table. With RAY_ADDRESS set (as under `ray job submit`) it joins that "
                    "cluster; otherwise Ray starts in this process.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 every trial ok or skipped; 1 done, but some trial failed (its row "
               "says why); 2 bad config or arguments; 4 a tuning cell found no setting, so its seeds did "
               "not run (the last lines say why); 130 interrupted (continue with --resume).")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"sweep YAML (default {DEFAULT_CONFIG})")
    p.add_argument("--storage", default="results",
                   help="results folder (default ./results, relative to where you run the command) or s3://...")
    p.add_argument("--name", help="sweep name (default: the config's name); results go to <storage>/<name>")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep: only unfinished trials run")
    p.add_argument("--dry-run", action="store_true", help="validate, print the trial matrix, start nothing")
    p.add_argument("--local", action="store_true",
                   help="one machine: start Ray here even if RAY_ADDRESS is set; trials queue on its GPU/CPUs")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs Ray may schedule on with --local (default: what torch sees)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--expect-gpus", type=float, default=0, metavar="N",
                   help="an autoscaler will add nodes with N GPUs each: wait for them (and ask for them) "
                        "instead of refusing a GPU sweep on a cluster that has no GPU now")
    p.add_argument("--gpu-memory", type=float, metavar="GIB",
                   help="memory of the GPU each trial gets, for the memory check and gpus_per_trial: auto "
                        "(default: resources.gpu_memory_gib, else this machine's GPU)")
    p.add_argument("--untuned-fallback", action="store_true",
                   help="a tuning cell none of whose trials finished runs its seeds at the configured settings "
                        "(rows marked tuning=untuned, kept out of the report's verdicts) instead of not at all")
    p.add_argument("--mlflow-uri", help="also log every trial to MLflow (e.g. sqlite:///abs/path/mlflow.db or "
                                        "http://host:5000; needs the mlflow extra)")
    return p


def plan(args) -> tuple[SweepConfig, Store, list[PlannedTrial]]:
    overrides = {"name": args.name} if args.name else {}
    if args.max_concurrent is not None:
        overrides["resources"] = {"max_concurrent": args.max_concurrent}
    sweep = load_config(args.config, "sweep", overrides)
    try:
        store = Store(args.storage)
    except Exception as err:  # pyarrow: unknown scheme, missing credentials, ...
        raise ConfigError([f"--storage = {args.storage!r}: {err}"]) from None
    planned = expand(sweep, store, "cuda" if sweep.resources.uses_gpus else "cpu")
    problems = plan_memory(planned, sweep.resources, gpu_memory_bytes(args.gpu_memory, sweep.resources.gpu_memory_gib))
    if problems:  # before Ray starts: a trial that cannot fit its GPU would die when it is its turn
        raise ConfigError(problems, "memory check")
    return sweep, store, planned


def gpu_memory_bytes(flag_gib: float | None, config_gib: float | None) -> int | None:
    """The GPU a trial gets: --gpu-memory, else the config's, else this machine's first GPU."""
    gib = flag_gib or config_gib
    if gib:
        return int(gib * 2**30)
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None


def pretokenize(planned: list[PlannedTrial]) -> None:
    """Tokenize once per (tokenizer, max_length) for the whole sweep, before trials start,
    so concurrent trials read the cache instead of racing to build it."""
    from transformers import AutoTokenizer

    from sentisweep.trial.data import load_task_data
    from sentisweep.trial.methods import get_method
    from sentisweep.trial.models import get_model_spec
    from sentisweep.trial.tokenization import tokenize_frame

    done: set[tuple] = set()
    data = None
    for trial in planned:
        c = trial.config
        if trial.skip_reason or not get_method(c.method.name).trains:
            continue
        tokenizer_source = get_model_spec(c.model).resolve_tokenizer()
        key = (tokenizer_source, c.training.max_length, c.data.truncation, c.data.head_share)
        if key in done:
            continue
        data = data or load_task_data(c.data)  # bad data stops the sweep: every trial needs it
        done.add(key)
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
            for frame in data.splits.values():
                tokenize_frame(frame, tokenizer, tokenizer_source, c.training.max_length, c.data.cache_dir,
                               c.data.truncation, c.data.head_share)
        except Exception as err:  # one model's tokenizer (a missing library, no access) stops only its trials
            print(f"warning: could not tokenize for {tokenizer_source}: {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:300]}; its trials will fail with this error", file=sys.stderr)
            continue
        print(f"tokenized for {tokenizer_source} at max_length {c.training.max_length}", flush=True)


def run_sweep(args, sweep: SweepConfig, store: Store, planned: list[PlannedTrial]) -> int:

    started = time.monotonic()
    runnable = [t for t in planned if t.skip_reason is None]
    try:
        pretokenize(runnable)
    except DataError as err:  # bad data is bad input: nothing has run yet
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.BAD_INPUT

    connect(args.local, args.num_gpus)  # [Ray]
    gpus_of = {row: t.gpus for row, t in enumerate(planned, 1) if t.skip_reason is None}
    gpus_per_trial = max(gpus_of.values(), default=0)
    problem = unsatisfiable(sweep.resources.cpus_per_trial, gpus_per_trial, args.expect_gpus)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    ask_autoscaler(sweep.resources.cpus_per_trial, gpus_per_trial,  # [Ray]
                   min(len(gpus_of), sweep.resources.max_concurrent or len(gpus_of)))
    chosen = {}
    if sweep.tuning:  # each cell's own search first, at an equal budget; its choice runs on every seed
        chosen = tuning.tune_cells(sweep, planned, store, args.resume)
        apply_choices(planned, chosen, args.untuned_fallback)
        tuning.reuse_chosen_runs(sweep, planned, chosen, store)
    # Tune's config of a trial is its row in the dry-run matrix, and its name our trial id: the
    # status table shows both whole, not the nested trial config cut short. The configs go
    # with the trainable.
    configs = {row: t.config.model_dump(mode="json") for row, t in enumerate(planned, 1) if t.runs}
    trial_id_of = trainable.AblationTrialId(configs)
    grid = run_trials(args, sweep, store, configs, gpus_of, trial_id_of) if configs else []
    trials = gather_results(planned, store, trainable.outcomes(grid, trial_id_of))
    from sentisweep.probe.baselines import with_baselines  # sklearn: only once the trials are done

    results = with_baselines(trials, sweep.baselines, sweep.data, sweep.name, store)
    where = store.write_frame(results, sweep.name, "results.parquet")
    failed_cells = [c for c in chosen.values() if not c.get("values")]
    print(final_screen(f"sweep {sweep.name}", results, store.uri(sweep.name), where, time.monotonic() - started,
                       tuning_section(sweep, chosen), tuning_warnings(failed_cells, args.untuned_fallback)))
    if failed_cells and not args.untuned_fallback:
        return exit_codes.TUNING_FAILED
    return exit_codes.FAILED if (results["status"] == "failed").any() else exit_codes.OK


def tuning_section(sweep: SweepConfig, chosen: dict[str, dict]) -> list[str]:
    if not chosen:
        return []
    return [f"tuning, {budget_text(sweep.tuning, sweep)}:", *(describe_choice(c) for c in chosen.values())]


def tuning_warnings(failed_cells: list[dict], untuned_fallback: bool) -> list[str]:
    """The lines a user must act on when a cell's tuning found no setting."""
    cells_text = ", ".join(f"{c['model']} / {c['variant']}" for c in failed_cells)
    if not failed_cells:
        return []
    if untuned_fallback:
        return [f"{cells_text}: tuning found no setting; --untuned-fallback ran the seeds at the configured settings. "
                "Those rows say tuning = untuned: not a tuned result, and the report keeps them out of its verdicts"]
    return [f"{cells_text}: tuning found no setting (no tuning trial finished; the errors are above), so their seeds "
            f"did not run (exit {exit_codes.TUNING_FAILED}). Fix the cause and run the sweep again under a new --name, "
            "or pass --untuned-fallback to run them at the configured settings"]


def run_trials(args, sweep: SweepConfig, store: Store, configs: dict[int, dict], gpus_of: dict[int, float],
               trial_id_of):
    """Every runnable trial of the matrix on Ray Tune; the ResultGrid."""
    from ray import tune  # [Ray]

    trial_fn = tune.with_parameters(trainable.run_ablation_trial, trials=configs, store=store.uri())  # [Ray]
    trial_fn = tune.with_resources(trial_fn, lambda config: {  # [Ray] each trial its own share of a GPU
        "cpu": sweep.resources.cpus_per_trial, "gpu": gpus_of[config["matrix_row"]]})
    if args.resume:
        tuner = tune.Tuner.restore(store.path(sweep.name, "tune"), trainable=trial_fn,  # [Ray]
                                   resume_unfinished=True, restart_errored=True, storage_filesystem=store.fs)
    else:
        tuner = tune.Tuner(  # [Ray]
            trial_fn,
            param_space={"matrix_row": tune.grid_search(list(configs))},
            tune_config=tune.TuneConfig(  # [Ray]
                max_concurrent_trials=sweep.resources.max_concurrent, reuse_actors=False,
                # our trial ids as the names in Tune's status table and its folders (TensorBoard's runs)
                trial_name_creator=trial_id_of, trial_dirname_creator=trial_id_of),
            run_config=tune.RunConfig(name="tune", storage_path=store.path(sweep.name),  # [Ray]
                                      storage_filesystem=store.fs,
                                      # a status table every 30 s and each trial's id as it starts, not each of its
                                      # reports as well (Tune's default when unset, verbose=2, prints those too)
                                      verbose=1,
                                      callbacks=tracking.logger_callbacks(args.mlflow_uri, sweep.name),
                                      failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                      # a resumable trial's latest checkpoint only: a retry needs no other
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
    return guard.Interruption().fit(tuner)  # [Ray] Tuner.fit, KeyboardInterrupt on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pin_args(args)  # every location made absolute here, before anything leaves this process
        sweep, store, planned = plan(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    print(f"sweep {sweep.name}: {len(sweep.models)} models x {len(sweep.methods)} methods x "
          f"{len(sweep.seeds)} seeds -> {store.uri(sweep.name)}")
    tuned = {(c.model, c.label): c.space for c in cells(sweep, planned)} if sweep.tuning else None
    print(matrix_table(planned, sweep.resources, sweep.baselines, tuned), flush=True)
    if sweep.tuning:
        print(f"equal-budget tuning before the seeds run: {budget_text(sweep.tuning, sweep)}", flush=True)
    if sweep.description:
        print(sweep.description.strip(), flush=True)
    problems, found = check_data(sweep.data)  # before any work, the dry run's too: every data check
    if problems:
        print("error: " + "\n  ".join(problems), file=sys.stderr)
        return exit_codes.BAD_INPUT
    print(found, flush=True)
    if args.dry_run:
        return guard.dry_run_done(store, sweep.name, args.resume)
    args.resume = guard.effective_resume(store, sweep.name, args.resume)
    return guard.run_guarded(store, sweep.name, args.resume, lambda: run_sweep(args, sweep, store, planned))


if __name__ == "__main__":
    raise SystemExit(exit_codes.run(main))
