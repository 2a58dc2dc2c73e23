"""sentisweep's core: train and measure one text-classification trial, plan sweeps and
searches, read and write results. Nothing here imports Ray (the Ray layers are `sweeps/`
and `ray_jobs/`, over `ray_session/`).

    config        typed configs and their defaults; the one trial_id()
    config_load   every config file loaded and checked against the registries
    plan          sweep and search trials expanded, with memory estimates and GPU shares
    layout        every file and folder name in a store
    registry      the name -> entry helper of the model and method registries
    results       TrialResult, its files, and the one reader (read_results)
    storage       atomic local writes and object-store paths
    locations     every location a command hands on, pinned in the driver (absolute, or a URI)
    screen        the last screen of a sweep or a search
    exit_codes    the exit status of every command
    trial/        one trial: data, tokenization, batching, models, methods, run, metrics
    probe/        embeddings, oneDNN linears, XGBoost, the TF-IDF baseline
    predict, export, demo   use a sweep's winner: classify texts, export it, serve it on a page
    train.py      `python -m sentisweep.train`: one trial from the command line

    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.run import run_trial
    result = run_trial(parse_trial_config({"model": "tiny-bert", "method": "lora", ...}))
"""

import logging
import warnings

__version__ = "0.1.0"

# bitsandbytes warns on import that an optional CPU kernel package is absent; its own
# 4-bit CPU path works without it (tested), so the line is noise in every trial's log.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# ... and on the way, offline (HF_HUB_OFFLINE), the kernels package says it skipped the kernel's
# publisher trust check: the same optional kernel, in every trial's log, quantizing or not.
logging.getLogger("kernels").setLevel(logging.ERROR)
# peft calls a transformers API deprecated for v6; nothing for a user to act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
