"""Where everything lives in a store: every file and folder name of a sweep, a search and a
study, in one place. `<storage>/<name>/` holds:

    results.parquet             every row, whatever its status (RESULTS_TABLE)
    run_config.json             the config the run started with (RUN_CONFIG_FILE): --resume refuses another
    .driver.lock                held by the driver while it runs (DRIVER_LOCK): a second one is refused
    tune/                       Ray Tune's experiment, for --resume (TUNE_FOLDER)
    trials/<trial_id>/          one trial (trial_parts): result.parquet (RESULT_FILE), history,
                                predictions, tensorboard/, checkpoint/ with sentisweep_trial.json (TRIAL_INFO_FILE)
    attempts/<trial_id>.jsonl   each start of a trial, beside its folder, which a retry replaces
    tuning/                     a tuned sweep's search trials: the same layout, plus chosen.json
    optuna.journal, best_trial.yaml   a search's study and best trial
"""

RESULT_FILE = "result.parquet"  # one trial's row, in its folder
RESULTS_TABLE = "results.parquet"  # a sweep's, search's or study's rows, in its folder
TUNE_FOLDER = "tune"  # Ray Tune's experiment state
TUNING_FOLDER = "tuning"  # a tuned sweep's search trials: their own table, never averaged with the seeds
CHOSEN_FILE = "chosen.json"  # in TUNING_FOLDER: each cell's choice
STUDY_JOURNAL = "optuna.journal"  # a search's Optuna study (sweeps/study.py)
# the config a sweep or search started with: --resume compares with it; the report reads a search's objectives
RUN_CONFIG_FILE = "run_config.json"
DRIVER_LOCK = ".driver.lock"  # flock'ed by the running driver (ray_session/guard.py)
BEST_TRIAL_FILE = "best_trial.yaml"  # a search's best trial as a config to run
TRIAL_INFO_FILE = "sentisweep_trial.json"  # written beside every trial checkpoint by run_trial


def trial_parts(name: str, trial: str) -> tuple[str, ...]:
    return (name, "trials", trial)


def attempts_parts(name: str, trial: str) -> tuple[str, ...]:
    return (name, "attempts", f"{trial}.jsonl")


def tune_parts(name: str) -> tuple[tuple[str, ...], ...]:
    """Where a run's Tune experiments are: its own, and a tuned sweep's tuning, which starts first
    (a sweep stopped while it tunes has only that one)."""
    return ((name, TUNE_FOLDER), (name, TUNING_FOLDER, TUNE_FOLDER))
