"""The Ray layer shared by the sweep entry points: connect, run one trial as a Tune
trainable, read back what Tune saw. One trial itself is `sentisweep.train.run_trial`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def evaluation_reporter():
    """A TrainerCallback that reports each validation accuracy to Tune, so a scheduler
    such as ASHA can stop a weak trial early (the trial process then ends mid-training)."""
    from ray import tune  # [Ray]
    from transformers import TrainerCallback

    class ReportEvaluations(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_accuracy" in metrics:
                tune.report({"val_accuracy": float(metrics["eval_accuracy"]),  # [Ray]
                             "step": int(state.global_step), "final": False})

    return ReportEvaluations()


def execute_trial(trial: dict[str, Any], store_location: str) -> None:
    """Run one trial inside a Tune trainable and report its TrialResult row. With a remote
    store the trial runs in a local folder and its outputs are uploaded when it ends."""
    from ray import tune  # [Ray]

    from sentisweep.config import TrialConfig
    from sentisweep.results import write_results
    from sentisweep.storage import Store
    from sentisweep.sweep import trial_parts
    from sentisweep.train import RESULT_FILE, run_trial

    config = TrialConfig.model_validate(trial)
    import_training_stack(config.method.name)
    if config.training.threads is None:
        # Ray sets OMP_NUM_THREADS from num_cpus, but a reused worker keeps its first value:
        # set torch's threads from what this trial was given.
        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)  # [Ray]
        config.training.threads = max(1, int(cpus))
    store = Store(store_location)
    parts = trial_parts(config.sweep, config.resolved_trial_id())
    if store.exists(*parts, RESULT_FILE):  # a retry after the result was written: report it again
        row = store.read_frame(*parts, RESULT_FILE).iloc[0].to_dict()
    elif store.remote:
        local = config.output_dir = str(Path.cwd() / "output")  # the trial's own working directory
        result = run_trial(config, callbacks=[evaluation_reporter()])
        for field in ("output_dir", "checkpoint_path", "predictions_path", "history_path"):
            if getattr(result, field):  # point the row at where its files will be
                setattr(result, field, getattr(result, field).replace(local, store.uri(*parts), 1))
        write_results([result], Path(local) / RESULT_FILE)
        store.upload(local, *parts)
        row = result.to_row()
    else:
        row = run_trial(config, callbacks=[evaluation_reporter()]).to_row()
    # The whole row is in result.parquet; Tune gets the numbers a scheduler or progress table
    # needs (names such as trial_id, hostname and done mean something else to Tune).
    metrics = {k: row[k] for k in REPORTED if row.get(k) is not None and row[k] == row[k]}
    metrics.update(val_accuracy=row.get("best_val_accuracy") or 0.0, final=True)
    tune.report(metrics)  # [Ray]


def import_training_stack(method: str) -> list[str]:
    """In a trial's own process, before anything has imported transformers: import peft and
    transformers' Trainer with the libraries this trial never uses looking absent, and return
    their names. Each process runs one trial (reuse_actors=False), and every second these
    imports take is paid again by every trial (a loop of trials pays it once):
    - bitsandbytes, unless the method quantizes, for the rest of the process: both libraries
      import it whenever it is installed, and it imports torch's compiler stack (torch,
      transformers' Trainer and peft: 3.8 -> 3.2 s, 3 alternating pairs). They look for it
      again later, so it stays hidden; a later QLoRA trial in this process would not find it.
    - datasets and scipy, only while these imports run: the Trainer imports `datasets`, and
      transformers' object-detection losses import `scipy.optimize`, whenever they are
      installed. A trial feeds the Trainer plain rows (`TokenizedRows`) and needs neither
      (import ray, Tune, peft, the Trainer and sentisweep: 6.17 -> 5.58 s, 5 alternating pairs).
      Transformers decides once per process (`is_datasets_available` is cached), so they come
      back afterwards for code that imports them itself (reading a Hub dataset).
    Hiding uses Python's own import block: a None in sys.modules is ModuleNotFoundError."""
    from sentisweep.methods import get_method

    if {"transformers", "peft"} & sys.modules.keys():
        return []  # they have looked already: hiding a library now would only break imports
    hidden = [name for name in ("datasets", "scipy") if name not in sys.modules]
    kept_out = []
    if not get_method(method).needs_bitsandbytes and "bitsandbytes" not in sys.modules:
        kept_out.append("bitsandbytes")
    for name in kept_out + hidden:
        sys.modules[name] = None
    try:
        import peft  # noqa: F401
        from transformers import Trainer  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return kept_out + hidden


REPORTED = ("status", "accuracy", "f1", "eval_loss", "train_seconds", "train_samples_per_second",
            "peak_memory_bytes", "trainable_params")


def run_ablation_trial(params: dict[str, Any]) -> None:
    """Tune trainable of the ablation: `params["trial"]` is a whole TrialConfig."""
    execute_trial(params["trial"], params["store"])


def ablation_trial_id(trial) -> str:
    """Our trial id, of a Tune Trial or Result. As a Trial's name and folder
    (`trial_name_creator`, `trial_dirname_creator`) it replaces Tune's own:
    `run_ablation_trial_<hash>_00003_3_trial=model_minilm-l6_method_name_...`, the whole
    config cut at 130 characters, where trials of one method still look alike."""
    return trial.config["trial"]["trial_id"]


def connect(local: bool, num_gpus: float | None) -> None:
    """Join RAY_ADDRESS's cluster (as under `ray job submit`), or start Ray here."""
    import ray  # [Ray]
    import ray.data  # [Ray]

    if ray.is_initialized():  # a driver that runs several stages connects once
        return
    # Ray Data's progress bars redraw from every actor into the job log; our jobs print
    # their own progress lines instead.
    ray.data.DataContext.get_current().enable_progress_bars = False  # [Ray]
    if local or not os.environ.get("RAY_ADDRESS"):
        os.environ.pop("RAY_ADDRESS", None)
        if num_gpus is None:
            import torch

            num_gpus = torch.cuda.device_count()
        # Workers import sweeps.common by name: put the checkout on their path.
        ray.init(address="local", num_gpus=num_gpus, include_dashboard=False,  # [Ray] a new instance, never
                 # one that `ray start` left running on this machine
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [
                     str(ROOT), os.environ.get("PYTHONPATH")]))},
                     "worker_process_setup_hook": "sweeps.common.quiet_placement_group_cleaner"})
    else:
        ray.init(address=os.environ["RAY_ADDRESS"])  # [Ray] the job's working_dir is on workers' path


def quiet_placement_group_cleaner() -> None:
    """Every worker of a local Ray (`worker_process_setup_hook`): Ray Train's placement-group
    cleaner asks the State API, which lives in the dashboard, whether the Train controller is
    still alive. Without a dashboard it warns each time it asks (34 of the 186 lines that
    `ray_jobs/embed_xgb.py` printed on the quick config). It has nothing to clean here: a local
    Ray ends with its driver. On a cluster the dashboard runs, and the cleaner works."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR)


class Interruption:
    """Ctrl-C during `Tuner.fit()`: Tune stops gracefully and saves its state, but returns
    as if it had finished. We take SIGINT ourselves (TUNE_DISABLE_SIGINT_HANDLER), remember
    it, and pass it on as SIGUSR1, Tune's other stop signal; `fit_or_interrupt` then
    raises KeyboardInterrupt so nothing half-done is written as a finished table."""

    def __init__(self):
        self.received = False

    def _handler(self, signum, frame):
        import signal

        self.received = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        os.kill(os.getpid(), signal.SIGUSR1)

    def fit(self, tuner):
        import signal

        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            grid = tuner.fit()  # [Ray]
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.received:
            raise KeyboardInterrupt
        return grid


def unsatisfiable(cpus_per_trial: float, gpus_per_trial: float) -> str | None:
    """Why no trial could ever start on this cluster, or None."""
    import ray  # [Ray]

    cluster = ray.cluster_resources()  # [Ray]
    have_cpu, have_gpu = cluster.get("CPU", 0), cluster.get("GPU", 0)
    if cpus_per_trial > have_cpu or gpus_per_trial > have_gpu:
        return (f"resources.cpus_per_trial = {cpus_per_trial:g}, gpus_per_trial = {gpus_per_trial:g}: the cluster "
                f"has {have_cpu:g} CPUs and {have_gpu:g} GPUs in all, so no trial could ever start")
    return None


def logger_callbacks(mlflow_uri: str | None, experiment: str) -> list:
    """TensorBoard files come with Ray Tune; MLflow when asked (a tracking server or a
    local sqlite:///path/mlflow.db: MLflow 3 refuses its old file store), one run per trial."""
    if not mlflow_uri:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback  # [Ray]

    return [MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=experiment)]  # [Ray]


EXIT_BAD_CONFIG, EXIT_INTERRUPTED = 2, 3


def effective_resume(store, name: str, resume: bool) -> bool:
    """--resume where nothing was saved yet starts the sweep: a RayJob retried after a failure
    before Tune saved anything runs the same command, and must not fail for it."""
    if resume and not store.exists(name, "tune"):
        print(f"nothing to resume at {store.uri(name)} yet: starting the sweep", file=sys.stderr, flush=True)
        return False
    return resume


def check_storage(store, name: str, resume: bool) -> str | None:
    """Refuse to overwrite a finished sweep or silently restart an interrupted one."""
    if resume:
        return None
    if store.exists(name, "results.parquet"):
        return f"{store.uri(name, 'results.parquet')} exists: this sweep finished; choose another --name or --storage"
    if store.exists(name, "tune"):
        return (f"{store.uri(name, 'tune')} exists: an unfinished sweep is there (interrupted, or still running); "
                "pass --resume to continue it")
    return None


def dry_run_done(store, name: str, resume: bool) -> int:
    """--dry-run ends here; it says now what the real run would refuse, not after a user waits."""
    refusal = check_storage(store, name, resume)
    print(f"dry run: nothing started{'; the run would stop here: ' + refusal if refusal else ''}")
    return 0


def run_guarded(store, name: str, resume: bool, run: Callable[[], int]) -> int:
    """Check the storage, run, and turn Ctrl-C into the hint to resume."""
    root = store.uri(name)
    refusal = check_storage(store, name, resume)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        return run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with the same command plus --resume (storage {root})", file=sys.stderr)
        return EXIT_INTERRUPTED


def outcomes(grid, trial_id_of) -> dict[str, dict[str, Any]]:
    """Our trial_id -> what Tune saw: its error (a worker that died too often) and last metrics."""
    seen = {}
    for result in grid:  # [Ray] a ResultGrid
        if result.config:
            seen[trial_id_of(result)] = {
                "error": f"{type(result.error).__name__}: {result.error}"[:2000] if result.error else None,
                "metrics": dict(result.metrics or {})}
    return seen
