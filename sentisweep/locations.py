"""Every location a command hands to another process, pinned once in the driver so that it
means there what it meant where the user typed it.

Ray Tune runs each trial in a working directory of its own inside Ray's session folder, and
`ray job submit` runs the driver itself in Ray's copy of the submitted working directory. A
relative path resolved there writes into a folder that vanishes with the session: the quick
sweep's tuning trials once wrote their rows there, the driver found none, and every method
fell back to an untuned learning rate (issue 35). So each command pins its locations before
anything leaves it:
- a URI (s3://, gs://, postgresql://, http://) stays as it is;
- a local path (and the path inside sqlite:/// or file: URLs) becomes absolute against the
  directory the command was run from;
- under `ray job submit` that directory is Ray's copy, not the user's: a relative location
  the command writes to is refused (exit 2) with the absolute form to give instead. Relative
  inputs (a config, a data folder of the repository) are read from the copy, which holds them.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentisweep.config import ConfigError, DataConfig
from sentisweep.storage import is_remote

# `ray job submit` sets this in the driver's environment (Ray's JobSupervisor: the job's
# runtime environment and metadata); a driver started by hand has no such variable.
RAY_JOB_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# the flags of our commands that name a location: (attribute, written to)
LOCATION_FLAGS = {"storage": True, "out": True, "study_storage": True, "mlflow_uri": True,
                  "cache_dir": True, "checkpoint": False, "embeddings": False, "data": False}
# URLs whose rest is a local path: (how they start, how a pinned one starts)
PATH_URLS = (("sqlite:///", "sqlite:///"), ("file://", "file://"), ("file:", "file://"))


def under_ray_job() -> bool:
    return bool(os.environ.get(RAY_JOB_VARIABLE))


def _split(location: str) -> tuple[str, str] | None:
    """(the prefix a pinned form takes, the local path) of a path or path URL; None for any other URI."""
    for start, pinned_start in PATH_URLS:
        if location.startswith(start):
            return pinned_start, location[len(start):]
    return None if is_remote(location) else ("", location)


def is_relative(location: str) -> bool:
    """A local path, or the path inside a sqlite:/// or file: URL, that is not absolute."""
    parts = _split(location)
    return parts is not None and not Path(parts[1]).expanduser().is_absolute()


def pinned(location: str | None) -> str | None:
    """`location` as every process of this run reads it: absolute against this directory."""
    if location is None or not is_relative(location):
        return location
    prefix, path = _split(location)
    return prefix + str(Path(path).expanduser().resolve())


def refusal(field: str, location: str) -> str | None:
    """Why a location written to cannot be pinned here, or None."""
    if not under_ray_job() or not is_relative(location):
        return None
    return (f"{field} = {location!r}: a relative path under `ray job submit` would resolve inside Ray's copy of "
            f"the working directory ({Path.cwd()}), which is deleted with the session. Give an absolute path "
            "that every node sees (a shared volume, e.g. --storage /mnt/shared/results, or on one machine "
            "--storage $PWD/results as you type the command) or object storage (s3://bucket/prefix)")


def pin_args(args) -> None:
    """Pin every location flag the command has (LOCATION_FLAGS), in place; ConfigError listing
    each one that cannot be pinned (a relative output under `ray job submit`)."""
    problems = []
    for name, written in LOCATION_FLAGS.items():
        value = getattr(args, name, None)
        if not isinstance(value, str):
            continue
        problem = refusal(f"--{name.replace('_', '-')}", value) if written else None
        if problem:
            problems.append(problem)
        elif written or Path(value).expanduser().exists():  # an input that is no path (a hub id) stays
            setattr(args, name, pinned(value))
    if problems:
        raise ConfigError(problems, "the locations this job writes to")


def pinned_data(data: DataConfig) -> DataConfig:
    """A data config with its cache and a local source (a dataset id's local mirror included)
    absolute, so a trial needs neither the driver's directory nor its mirror variable."""
    from sentisweep.trial.data import resolve_source

    problem = refusal("data.cache_dir", data.cache_dir)
    if problem:
        raise ConfigError([problem + " (or set SENTISWEEP_CACHE_DIR)"], "the locations this job writes to")
    source = Path(resolve_source(data.source)).expanduser()
    return data.model_copy(update={"cache_dir": pinned(data.cache_dir),
                                   "source": str(source.resolve()) if source.exists() else data.source})


def pinned_model(name: str) -> str:
    """A model given as a local folder, absolute; a registry name or hub id as it is."""
    from sentisweep.trial.models import MODELS

    if name in MODELS or not Path(name).expanduser().is_dir():
        return name
    return str(Path(name).expanduser().resolve())
