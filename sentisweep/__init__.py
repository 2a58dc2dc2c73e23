"""sentisweep core: train and measure one text-classification trial, no Ray involved.

    from sentisweep.config import parse_trial_config
    from sentisweep.train import run_trial
    result = run_trial(parse_trial_config({"model": "tiny-bert", "method": "lora", ...}))
"""

__version__ = "0.1.0"
