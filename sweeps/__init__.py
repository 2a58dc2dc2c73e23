"""The Ray Tune layer: `python sweeps/ablation.py` (every model x method x seed trial of a
sweep) and `python sweeps/search.py` (Optuna + ASHA over LoRA's settings); `trainable.py`
runs one trial under Tune. Ray-specific lines are marked `# [Ray]`."""
