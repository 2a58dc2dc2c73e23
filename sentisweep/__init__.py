"""sentisweep core: train and measure one text-classification trial, no Ray involved.

    from sentisweep.config import parse_trial_config
    from sentisweep.train import run_trial
    result = run_trial(parse_trial_config({"model": "tiny-bert", "method": "lora", ...}))
"""

import logging
import warnings

__version__ = "0.1.0"

# bitsandbytes warns on import that an optional CPU kernel package is absent; its own
# 4-bit CPU path works without it (tested), so the line is noise in every trial's log.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft calls a transformers API deprecated for v6; nothing for a user to act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
