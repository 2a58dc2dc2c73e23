"""Around a run: refuse to overwrite a finished sweep or silently restart an interrupted one,
and turn Ctrl-C into one line and exit 130 with the hint to resume."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from sentisweep import exit_codes
from sentisweep.layout import RESULTS_TABLE, tune_parts


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
        print(f"nothing to resume at {store.uri(name)} yet: starting the sweep", file=sys.stderr, flush=True)
        return False
    return resume


def check_storage(store, name: str, resume: bool) -> str | None:
    """Refuse to overwrite a finished sweep or search, or silently restart an interrupted one."""
    if resume:
        return None
    if store.exists(name, RESULTS_TABLE):
        return f"{store.uri(name, RESULTS_TABLE)} exists: a finished run is there; choose another --name or --storage"
    if parts := unfinished(store, name):
        return (f"{store.uri(*parts)} exists: an unfinished run is there (interrupted, or still running); "
                "pass --resume to continue it")
    return None


def dry_run_done(store, name: str, resume: bool) -> int:
    """--dry-run ends here; it says now what the real run would refuse, not after a user waits,
    and exits as the real run would (2 where it would refuse)."""
    refusal = check_storage(store, name, resume)
    print("dry run: nothing started", flush=True)
    if refusal:
        raise exit_codes.BadInput(f"the run would stop here: {refusal}")
    return exit_codes.OK


def run_guarded(store, name: str, resume: bool, run: Callable[[], int]) -> int:
    """Check the storage, run, and turn Ctrl-C into the hint to resume."""
    root = store.uri(name)
    refusal = check_storage(store, name, resume)
    if refusal:
        raise exit_codes.BadInput(refusal)
    try:
        return run()
    except KeyboardInterrupt:
        import ray  # [Ray]

        # Ray down first: its trial workers, stopped, print their shutdown tracebacks through
        # the driver's log stream, which at exit came after this line, the last a user reads
        ray.shutdown()  # [Ray]
        print(f"\ninterrupted: continue with the same command plus --resume (storage {root})", file=sys.stderr)
        return exit_codes.INTERRUPTED
