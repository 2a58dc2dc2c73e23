"""Every kind of config file loaded and checked against the registries: a file says what it is
with `kind:` (trial, sweep, search, embed_xgb) or is recognised by its fields, and every
problem is reported at once, before any model loads or Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sentisweep.config import (
    ConfigError,
    MethodConfig,
    SearchConfig,
    SweepConfig,
    TrainingConfig,
    TrialConfig,
    format_pydantic,
    read_yaml,
)
from sentisweep.trial.methods import METHODS, method_problems, resolved_params
from sentisweep.trial.models import architecture_problems, model_problems
from sentisweep.tuning import space_problems

SEARCHED_PARAMETERS = ("r", "alpha", "dropout")  # what a search's space sets on the method


# -- loading ------------------------------------------------------------------------------

def load_config(path: str | Path, kind: str, overrides: dict[str, Any] | None = None):
    """The config in `path`, validated as `kind`; a file that says or looks like another kind
    is refused with the command that runs it."""
    raw = read_yaml(path, overrides)
    found = raw.get("kind") or _looks_like(raw)
    if found and found != kind:
        a = {name: "an" if name[0] in "aeiou" else "a" for name in (found, kind)}
        raise ConfigError([f"kind = {found!r}: this is {a[found]} {found} config, not {a[kind]} {kind} config "
                           f"({RUNS_WITH.get(found, 'see README')})"], str(path))
    if kind == "embed_xgb":
        from sentisweep.probe.embed_xgb_config import parse_embed_xgb_config

        return parse_embed_xgb_config(raw, str(path))
    return PARSERS[kind](raw, str(path))


RUNS_WITH = {"trial": "python -m sentisweep.train --config", "sweep": "python sweeps/ablation.py --config",
             "search": "python sweeps/search.py --config", "embed_xgb": "python ray_jobs/embed_xgb.py --config"}


def _looks_like(raw: dict[str, Any]) -> str | None:
    if "space" in raw or "num_samples" in raw:
        return "search"
    if isinstance(raw.get("methods"), list):
        return "sweep"
    if isinstance(raw.get("models"), list) and any(isinstance(m, dict) for m in raw["models"]):
        return "embed_xgb"
    return None


def _validated(model_class, raw: Any, source: str | None, extra_problems=()):
    try:
        return model_class.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_pydantic(err) + list(extra_problems), source) from None


def parse_trial_config(raw: dict[str, Any], source: str | None = None) -> TrialConfig:
    """Types first, then registry names and method parameters; every problem at once."""
    config = _validated(TrialConfig, raw, source, _raw_registry_problems(raw))
    problems = model_problems(config.model) + method_problems(config.method)
    if not problems:
        problems = _architecture_problems(config.model, config.training.max_length, config.method)
    if problems:
        raise ConfigError(problems, source)
    return config


def _architecture_problems(model: str, max_length: int, method: MethodConfig, where: str = "") -> list[str]:
    """What the model's config says cannot work (a max_length past its positions, module names
    it lacks), for a known model and method; `where` prefixes the fields (a sweep's `methods[1].`)."""
    placement = resolved_params(method).get("placement")
    problems = architecture_problems(model, max_length, placement)
    return [p.replace("method.", where, 1) if where else p for p in problems]


def _raw_registry_problems(raw: Any) -> list[str]:
    """Registry checks on whatever parts of an invalid trial config are well-typed, so one
    run shows every mistake."""
    if not isinstance(raw, dict):
        return []
    problems = model_problems(raw["model"]) if isinstance(raw.get("model"), str) else []
    method = raw.get("method")
    method = {"name": method} if isinstance(method, str) else method
    if isinstance(method, dict):
        try:
            problems += method_problems(MethodConfig.model_validate(method))
        except ValidationError:
            pass  # already reported field by field
    return problems


def parse_sweep_config(raw: dict[str, Any], source: str | None = None) -> SweepConfig:
    sweep = _validated(SweepConfig, raw, source)
    problems = []
    for i, model in enumerate(sweep.models):
        problems += [p.replace("model =", f"models[{i}] =", 1) for p in model_problems(model)]
    repeated = sorted({m for m in sweep.models if sweep.models.count(m) > 1})
    if repeated:
        problems.append(f"models = {sweep.models}: {repeated} listed twice would run the same trials twice")
    for i, variant in enumerate(sweep.methods):
        problems += [p.replace("method.", f"methods[{i}].", 1) for p in method_problems(variant.method_config())]
        problems += [f"methods[{i}].models[{j}] = {model!r}: not one of the sweep's models {sweep.models}"
                     for j, model in enumerate(variant.models or []) if model not in sweep.models]
        if variant.training:
            try:
                TrainingConfig.model_validate({**sweep.training.model_dump(), **variant.training})
            except ValidationError as err:
                problems += [f"methods[{i}].{p}" for p in format_pydantic(err)]
    labels = [v.resolved_label() for v in sweep.methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        problems.append(f"methods: variants {duplicates} appear twice; give them distinct 'label's")
    from sentisweep.probe.baselines import baseline_problems

    problems += baseline_problems(sweep.baselines)
    problems += space_problems(sweep)
    if len(set(sweep.seeds)) != len(sweep.seeds):
        problems.append(f"seeds = {sweep.seeds}: repeated seeds would run the same trial twice")
    if not problems:
        for model in sweep.models:
            for i, variant in enumerate(sweep.methods):
                if variant.models is None or model in variant.models:
                    training = {**sweep.training.model_dump(), **(variant.training or {})}
                    problems += [f"{model}: {p}" for p in _architecture_problems(
                        model, training["max_length"], variant.method_config(), f"methods[{i}].")]
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index), source)
    return sweep


def parse_search_config(raw: dict[str, Any], source: str | None = None) -> SearchConfig:
    search = _validated(SearchConfig, raw, source)
    problems = model_problems(search.model)
    if search.method not in METHODS:
        problems.append(METHODS.unknown(search.method, "method"))
    elif not METHODS.get(search.method).takes(*SEARCHED_PARAMETERS):
        takes = sorted(name for name, spec in METHODS.items() if spec.takes(*SEARCHED_PARAMETERS))
        problems.append(f"method = {search.method!r}: the search space sets {', '.join(SEARCHED_PARAMETERS)}, "
                        f"which it does not take; allowed: {', '.join(takes)}")
    else:
        problems += method_problems(MethodConfig(name=search.method, placement=search.placement))
    if not problems:
        problems += _architecture_problems(search.model, search.training.max_length,
                                           MethodConfig(name=search.method, placement=search.placement))
    from sentisweep.probe.baselines import baseline_problems

    problems += baseline_problems(search.baselines)
    if search.resources.gpus_per_trial == "auto":
        problems.append("resources.gpus_per_trial = 'auto': a search's trials differ only in their sampled "
                        "values; give the share of a GPU each gets (e.g. 1 or 0.5)")
    if search.training.eval_steps is None and search.training.epochs < 2:
        problems.append("training.eval_steps = None with fewer than 2 epochs: the scheduler would see one "
                        "validation report per trial; set eval_steps")
    if problems:
        raise ConfigError(problems, source)
    return search


PARSERS = {"trial": parse_trial_config, "sweep": parse_sweep_config, "search": parse_search_config}
