"""Around a run: refuse to overwrite a finished sweep, silently restart an interrupted one or run
one twice at once, and turn Ctrl-C into one line and exit 130 with the hint to resume."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sentisweep import exit_codes
from sentisweep.layout import DRIVER_LOCK, RESULTS_TABLE, RUN_CONFIG_FILE, tune_parts
from sentisweep.storage import driver_running


class Interruption:
    """Ctrl-C during `Tuner.fit()`: Tune stops gracefully and saves its state, but returns
    as if it had finished. We take SIGINT ourselves (TUNE_DISABLE_SIGINT_HANDLER), remember
    it, and pass it on as SIGUSR1, Tune's other stop signal; `fit` then
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


def unfinished(store, name: str) -> tuple[str, ...] | None:
    """The parts of a Tune experiment an earlier run of `name` left, or None."""
    return next((parts for parts in tune_parts(name) if store.exists(*parts)), None)


def effective_resume(store, name: str, resume: bool) -> bool:
    """--resume where nothing was saved yet starts the sweep: a RayJob retried after a failure
    before Tune saved anything runs the same command, and must not fail for it."""
    if resume and not unfinished(store, name):
        print(f"nothing to resume at {store.uri(name)} yet: starting from the beginning", file=sys.stderr, flush=True)
        return False
    return resume


def check_storage(store, config, resume: bool) -> str | None:
    """Refuse to overwrite a finished sweep or search, silently restart an interrupted one, run
    one that another driver runs now, or continue one under a changed config."""
    name = config.name
    if resume:
        if not unfinished(store, name):
            return None
        return running_now(store, name) or changed_config(store, config)
    if store.exists(name, RESULTS_TABLE):
        return f"{store.uri(name, RESULTS_TABLE)} exists: a finished run is there; choose another --name or --storage"
    if parts := unfinished(store, name):
        return running_now(store, name) or (f"{store.uri(*parts)} exists: an unfinished run is there "
                                             "(interrupted); pass --resume to continue it")
    return None


def driver_lock(store, name: str):
    """The run's lock, held until the driver ends: a second driver of the same run (a --resume in
    another terminal, a `ray job submit` sent again while the first still runs) would run Tune's
    saved trials, or the study's stages, a second time over the same files. flock: the kernel lets
    go when the driver dies, however it dies. Local and NFS folders only; an object store has no
    lock (a null context)."""
    if store.remote:
        return contextlib.nullcontext()
    path = Path(store.path(name, DRIVER_LOCK))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # closed, and so unlocked, when the run's `with` ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise exit_codes.BadInput(running_message(store, name)) from None
    except OSError as err:  # a folder that takes no locks (some FUSE mounts): it runs as before the lock
        print(f"note: {path} cannot be locked ({err}); a second driver of this run would not be refused",
              file=sys.stderr)
    return handle


def running_now(store, name: str) -> str | None:
    """The refusal where another driver holds the run's lock now, else None."""
    if store.remote or not driver_running(store.path(name)):
        return None
    return running_message(store, name)


def running_message(store, name: str) -> str:
    return (f"{store.uri(name)} is running now: another driver holds {store.uri(name, DRIVER_LOCK)}; "
            "wait for it, or stop it (Ctrl-C, `ray job stop`) before running it again")


# What a resumed run may set otherwise: how wide it runs and what it prints, not what a trial
# computes (a retry may run on other nodes; the cache folder is one machine's path).
MAY_CHANGE = ("description", "resources", "max_failures", "data.cache_dir")


def changed_config(store, config) -> str | None:
    """Tune's restore runs the saved trials and search space whatever the config says now, and the
    trials take their settings from the new one: a changed config is refused, naming each field.
    (A sweep resumed with a seed added ran its saved trials by the new matrix's rows: full
    fine-tuning's seed 3 under LoRA seed 1's name; the quick sweep with head-only added died in its
    tuning, on a cell the saved Tuner did not know.) None when no config was saved."""
    if not store.is_file(config.name, RUN_CONFIG_FILE):
        return None
    before = flat(store.read_json(config.name, RUN_CONFIG_FILE))
    after = flat(config.model_dump(mode="json"))
    changes = [f"{key} = {after[key]!r}: it started with {before[key]!r}" if key in before and key in after
               else f"{key} = {after[key]!r}: it started without it" if key in after
               else f"{key}: it started with {before[key]!r}, the config now has none"
               for key in sorted(before.keys() | after.keys())
               if before.get(key) != after.get(key) and not key.startswith(MAY_CHANGE)]
    if not changes:
        return None
    shown_changes = changes[:8] + ([f"... and {len(changes) - 8} more"] if len(changes) > 8 else [])
    return "\n".join([f"{store.uri(config.name)} was started with another config, and --resume continues a run "
                      f"as it started ({store.uri(config.name, RUN_CONFIG_FILE)}):",
                      *(f"  - {line}" for line in shown_changes),
                      "undo the change to continue it, or run the changed config under another --name"])


def flat(value, key: str = "") -> dict:
    """A config's fields by dotted name (`methods[3].name`); unset ones (None) left out."""
    if isinstance(value, dict):
        return {k: v for field, item in value.items()
                for k, v in flat(item, f"{key}.{field}" if key else field).items()}
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{key}[{i}]").items()}
    return {} if value is None else {key: value}


def dry_run_done(store, config, resume: bool) -> int:
    """--dry-run ends here; it says now what the real run would refuse, not after a user waits,
    and exits as the real run would (2 where it would refuse)."""
    refusal = check_storage(store, config, resume)
    print("dry run: nothing started", flush=True)
    if refusal:
        raise exit_codes.BadInput(f"the run would stop here: {refusal}")
    return exit_codes.OK


def run_guarded(store, config, resume: bool, run: Callable[[], int]) -> int:
    """Check the storage, keep the config the run starts with, run, and turn Ctrl-C into the hint
    to resume."""
    root = store.uri(config.name)
    refusal = check_storage(store, config, resume)
    if refusal:
        raise exit_codes.BadInput(refusal)
    try:  # the run's first writes: a storage it cannot write to is said here, before Ray starts
        lock = driver_lock(store, config.name)  # before the config: two drivers started at once
        if not (resume and store.is_file(config.name, RUN_CONFIG_FILE)):
            store.write_bytes(config.model_dump_json(indent=1).encode(), config.name, RUN_CONFIG_FILE)
    except OSError as err:  # pyarrow's errors too (a bucket that is not there, no credentials)
        raise exit_codes.BadInput(f"--storage: cannot write to {root} ({err}); give a folder you can "
                                  "write to, or s3://bucket/prefix") from None
    try:
        with lock:
            return run()
    except KeyboardInterrupt:
        import ray  # [Ray]

        # Ray down first: its trial workers, stopped, print their shutdown tracebacks through
        # the driver's log stream, which at exit came after this line, the last a user reads
        ray.shutdown()  # [Ray]
        print(f"\ninterrupted: continue with the same command plus --resume (storage {root})", file=sys.stderr)
        return exit_codes.INTERRUPTED
