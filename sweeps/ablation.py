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

import time

from ray_session import guard, tracking
from ray_session.connect import gpu_memory_of_a_gpu_node
from sentisweep import exit_codes
from sentisweep.config import ConfigError, SweepConfig
from sentisweep.config_load import load_config
from sentisweep.locations import pin_args
from sentisweep.plan import PlannedTrial, expand, plan_memory, rate_warnings
from sentisweep.results import finished_earlier, gather_results
from sentisweep.screen import matrix_table
from sentisweep.storage import Store
from sentisweep.trial.data import check_data
from sentisweep.trial.models import get_model_spec, prefetch
from sentisweep.tuning import apply_choices, budget_text, cells, describe_choice
from sweeps import driver, trainable, tuning

DEFAULT_CONFIG = "quick.yaml"


def build_parser():
    p = driver.parser(
        "python sweeps/ablation.py", what="sweep", default_config=DEFAULT_CONFIG,
        description="Run every model x method x seed trial of a sweep config on Ray Tune and gather "
                    "one results table. With RAY_ADDRESS set (as under `ray job submit`) it joins that "
                    "cluster; otherwise Ray starts in this process.",
        epilog="exit status: 0 every trial ok or skipped; 1 done, but some trial failed (its row "
               "says why); 2 bad config or arguments; 4 a tuning cell found no setting, so its seeds did "
               "not run (the last lines say why); 130 interrupted (continue with --resume).")
    p.add_argument("--gpu-memory", type=driver.number_from(0, above=True), metavar="GIB",
                   help="memory of the GPU each trial gets, for the memory check and gpus_per_trial: auto "
                        "(default: resources.gpu_memory_gib, else this machine's GPU)")
    p.add_argument("--untuned-fallback", action="store_true",
                   help="a tuning cell none of whose trials finished runs its seeds at the configured settings "
                        "(rows marked tuning=untuned, kept out of the report's verdicts) instead of not at all")
    return p


def plan(args) -> tuple[SweepConfig, Store, list[PlannedTrial]]:
    sweep = load_config(args.config, "sweep", driver.overrides(args))
    store = driver.open_store(args.storage)
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


def check_memory_on_a_gpu_node(sweep: SweepConfig, planned: list[PlannedTrial]) -> dict[int, float] | None:
    """The memory check of plan(), against a GPU node's GPU where the driver has none (a cluster's
    head) and neither --gpu-memory nor the config says one: before any trial runs. Returns the GPU
    shares sized on it, or None where no GPU could be read."""
    measured = gpu_memory_of_a_gpu_node()  # [Ray]
    if measured is None:
        return None
    problems = plan_memory(planned, sweep.resources, measured)
    if problems:
        raise ConfigError(problems, f"memory check against the cluster's GPU ({measured / 2**30:.1f} GiB)")
    print(f"memory check against the cluster's GPU ({measured / 2**30:.1f} GiB): every trial fits", flush=True)
    return {row: t.gpus for row, t in enumerate(planned, 1) if t.skip_reason is None}


def run_sweep(args, sweep: SweepConfig, store: Store, planned: list[PlannedTrial], finished: set[str]) -> int:
    started = time.monotonic()
    gpus_of = {row: t.gpus for row, t in enumerate(planned, 1) if t.skip_reason is None}
    left = len(gpus_of) - len(finished)  # every trial of a resumed sweep done earlier: no Ray, only its rows
    if left:
        gpus_of = prepare(args, sweep, planned, gpus_of)
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
    grid = run_trials(args, sweep, store, configs, gpus_of, trial_id_of) if configs and left else []
    trials = gather_results(planned, store, trainable.outcomes(grid, trial_id_of))
    failed_cells = [c for c in chosen.values() if not c.get("values")]
    results = driver.finish(f"sweep {sweep.name}", trials, sweep, store, started, tuning_section(sweep, chosen),
                            tuning_warnings(failed_cells, args.untuned_fallback) + rate_warnings(sweep, planned))
    return driver.exit_status(results, bool(failed_cells) and not args.untuned_fallback)


def prepare(args, sweep: SweepConfig, planned: list[PlannedTrial], gpus_of: dict[int, float]) -> dict[int, float]:
    """Ray up (and room for the trials asked of an autoscaler), every trial's tokens and model
    fetched, and the memory check against a GPU node's GPU where nothing else names one.
    Returns each trial's GPU share: `gpus_of`, or as sized on that node's GPU."""
    wait_for_room = driver.start_ray(args, sweep.resources.cpus_per_trial, max(gpus_of.values(), default=0),
                                     min(len(gpus_of), sweep.resources.max_concurrent or len(gpus_of)))
    driver.pretokenize([t.config for t in planned if t.skip_reason is None])  # bad data: BadInput, no trial has run
    prefetch([get_model_spec(t.config.model) for t in planned if t.skip_reason is None])
    wait_for_room()  # the autoscaler's node booted meanwhile
    if sweep.resources.uses_gpus and gpu_memory_bytes(args.gpu_memory, sweep.resources.gpu_memory_gib) is None:
        return check_memory_on_a_gpu_node(sweep, planned) or gpus_of
    return gpus_of


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
    return driver.fit(
        trial_fn, lambda config: {"cpu": sweep.resources.cpus_per_trial, "gpu": gpus_of[config["matrix_row"]]},
        store, (sweep.name,), args.resume, sweep.max_failures, lambda: (
            tune.TuneConfig(  # [Ray]
                max_concurrent_trials=sweep.resources.max_concurrent, reuse_actors=False,
                # our trial ids as the names in Tune's status table and its folders (TensorBoard's runs)
                trial_name_creator=trial_id_of, trial_dirname_creator=trial_id_of),
            {"matrix_row": tune.grid_search(list(configs))}),  # [Ray]
        tracking.logger_callbacks(args.mlflow_uri, sweep.name))


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pin_args(args)  # every location made absolute here, before anything leaves this process
    sweep, store, planned = plan(args)
    print(f"sweep {sweep.name}: {len(sweep.models)} models x {len(sweep.methods)} methods x "
          f"{len(sweep.seeds)} seeds -> {store.uri(sweep.name)}")
    tuned = {c.key: c.space for c in cells(sweep, planned)} if sweep.tuning else None
    finished = finished_earlier(planned, store) if args.resume else set()
    print(matrix_table(planned, sweep.resources, sweep.baselines, tuned, finished), flush=True)
    if sweep.tuning:
        print(f"equal-budget tuning before the seeds run: {budget_text(sweep.tuning, sweep)}", flush=True)
    for warning in rate_warnings(sweep, planned):  # said now, so a user can stop the sweep; again at its end
        print(f"WARNING: {warning}", flush=True)
    if sweep.description:
        print(sweep.description.strip(), flush=True)
    print(check_data(sweep.data), flush=True)  # before any work, the dry run's too: every data check
    if args.dry_run:
        return guard.dry_run_done(store, sweep, args.resume)
    args.resume = guard.effective_resume(store, sweep.name, args.resume)
    return guard.run_guarded(store, sweep, args.resume, lambda: run_sweep(args, sweep, store, planned, finished))


if __name__ == "__main__":
    raise SystemExit(main())
