"""One trial as a Ray Tune trainable, and what Tune saw of each trial afterwards. The trial
itself is `sentisweep.trial.run.run_trial`, plain Python."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from ray_session.connect import DECLARED_GPUS_ONLY
from sentisweep.config import TrialConfig
from sentisweep.layout import RESULT_FILE, attempts_parts, trial_parts
from sentisweep.results import attempts_of, now_iso
from sentisweep.storage import Store
from sentisweep.trial.run import run_trial

# The numbers a scheduler or Tune's progress table needs; the whole row is in result.parquet
# (names such as trial_id, hostname and done mean something else to Tune).
REPORTED = ("status", "accuracy", "f1", "eval_loss", "train_seconds", "train_samples_per_second",
            "peak_memory_bytes", "trainable_params")


def evaluation_reporter(resumable: bool):
    """A TrainerCallback that reports each validation accuracy to Tune, so a scheduler such as
    ASHA can stop a weak trial early (the trial process then ends mid-training). A resumable
    trial reports it with the checkpoint saved right after (optimizer state included): Tune
    keeps that in the trial's storage, and a retry resumes from it (`execute_trial`)."""
    from ray import tune  # [Ray]
    from transformers import TrainerCallback

    class ReportEvaluations(TrainerCallback):
        metrics: dict | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_accuracy" in metrics:
                self.metrics = {"val_accuracy": float(metrics["eval_accuracy"]), "step": int(state.global_step),
                                "final": False}
                if not resumable:
                    tune.report(self.metrics)  # [Ray]

        def on_save(self, args, state, control, **kwargs):
            if resumable and self.metrics:  # the Trainer saves right after it evaluates
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                tune.report(self.metrics, checkpoint=tune.Checkpoint.from_directory(folder))  # [Ray] uploads it

    return ReportEvaluations()


def execute_trial(config: TrialConfig, store_location: str) -> None:
    """Run one trial inside a Tune trainable and report its TrialResult row. With a remote
    store the trial runs in a local folder and its outputs are uploaded when it ends."""
    from ray import tune  # [Ray]

    given = tune.get_context().get_trial_resources().required_resources  # [Ray]
    training = {}
    if config.training.threads is None:
        # Ray sets OMP_NUM_THREADS from num_cpus, but a reused worker keeps its first value:
        # set torch's threads from what this trial was given.
        training["threads"] = max(1, int(given.get("CPU", 1)))
    if config.training.device == "auto" and not os.environ.get(DECLARED_GPUS_ONLY):
        # the device Ray assigned: a GPU trial without CUDA fails instead of training on the CPU
        # for days, and a CPU trial on a GPU node stays off the GPU
        training["device"] = "cuda" if given.get("GPU", 0) else "cpu"
    if 0 < given.get("GPU", 0) < 1:
        training["gpu_share"] = given["GPU"]  # capped at its share: neighbours on the GPU survive its overrun
    update = {"training": config.training.model_copy(update=training)}
    if os.environ.get("SENTISWEEP_CACHE_DIR"):
        # this node's own cache (the driver's path may not exist here: object storage, no shared
        # volume); on KubeRay every node sets the same shared path, so nothing changes there
        update["data"] = config.data.model_copy(update={"cache_dir": os.environ["SENTISWEEP_CACHE_DIR"]})
    config = config.model_copy(update=update)
    store = Store(store_location)
    trial = config.resolved_trial_id()
    parts = trial_parts(config.sweep, trial)
    if store.exists(*parts, RESULT_FILE):  # a retry after the result was written: report it again
        row = store.read_frame(*parts, RESULT_FILE).iloc[0].to_dict()
    else:
        # every start counted (and where it ran), so a row says how often its trial was retried
        import ray  # [Ray]

        # the node by its address: several nodes may share a host name (pods of one host, test nodes)
        host = f"{socket.gethostname()}/{ray.util.get_node_ip_address()}"  # [Ray]
        store.append_line(json.dumps({"start": now_iso(), "host": host, "pid": os.getpid()}),
                          *attempts_parts(config.sweep, trial))
        local = str(Path.cwd() / "output") if store.remote else config.output_dir  # remote: the trial's own folder
        resume_from = None
        saved = tune.get_checkpoint()  # [Ray] this trial's last checkpoint, if an earlier attempt saved one
        if saved is not None and config.training.resumable:
            resume_from = saved.to_directory(str(Path.cwd() / "resume"))  # [Ray] downloaded from the trial's storage
        def annotate(result) -> None:  # before run_trial writes the row, once
            result.attempts, result.attempt_hosts = attempts_of(store, config.sweep, trial)
            if store.remote:
                result.relocate(local, store.uri(*parts))  # the row names where its files will be

        result = run_trial(config.model_copy(update={"output_dir": local}), resume_from=resume_from,
                           callbacks=[evaluation_reporter(config.training.resumable)], annotate=annotate)
        if store.remote:
            store.upload(local, *parts)
        row = result.to_row()
    metrics = {k: row[k] for k in REPORTED if row.get(k) is not None and row[k] == row[k]}
    metrics.update(val_accuracy=row.get("best_val_accuracy") or 0.0, final=True)
    tune.report(metrics)  # [Ray]


def run_ablation_trial(params: dict[str, Any], trials: dict[int, dict], store: str) -> None:
    """Tune trainable of the ablation: Tune's config is only the trial's row in the dry-run
    matrix (`matrix_row`); the trial configs ride along (`tune.with_parameters`)."""
    execute_trial(TrialConfig.model_validate(trials[params["matrix_row"]]), store)


class AblationTrialId:
    """Our trial id, of a Tune Trial or Result: its name in Tune's status table and its folder,
    instead of Tune's own (`run_ablation_trial_<hash>_00003_...`, the config cut short)."""

    def __init__(self, trials: dict[int, dict]):
        self.ids = {row: config["trial_id"] for row, config in trials.items()}

    def __call__(self, trial) -> str:
        return self.ids[trial.config["matrix_row"]]


def outcomes(grid, trial_id_of) -> dict[str, dict[str, Any]]:
    """Our trial_id -> what Tune saw: its error (a worker that died too often) and last metrics."""
    seen = {}
    for result in grid:  # [Ray] a ResultGrid
        if result.config:
            seen[trial_id_of(result)] = {
                "error": f"{type(result.error).__name__}: {result.error}"[:2000] if result.error else None,
                "metrics": dict(result.metrics or {})}
    return seen
