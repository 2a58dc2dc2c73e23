"""The exit status of every command (README, "Exit codes"): one table, tested per entry point,
and the one place that turns bad input and Ctrl-C into them."""

import functools
import sys

OK = 0  # done; every trial ok (or skipped, in a sweep)
FAILED = 1  # done, but a trial or a stage failed: its row says why
BAD_INPUT = 2  # bad arguments, config or data, or an output that would be overwritten: nothing ran
SKIPPED = 3  # one trial (python -m sentisweep.train) that cannot run here: its row says why
# done, but a tuning cell found no setting (its seeds did not run) or a search had no finished trial:
# the numbers the user asked for do not exist; the last lines name each cell and its trials' errors
TUNING_FAILED = 4
# Ctrl-C (128 + SIGINT); a sweep or search continues with --resume, the embedding study as it was typed
INTERRUPTED = 130


class BadInput(ValueError):
    """What a command refuses (arguments, config, data, an output it would overwrite), with a
    message naming the field, the value and what is allowed. Every error class of bad input
    derives from it; `command` turns it into one "error:" line and BAD_INPUT."""

    def __init__(self, *problems: str):
        super().__init__("\n  ".join(problems))


def command(main):
    """A command's `main(argv)`: bad input ends it in one "error: ..." line and BAD_INPUT, Ctrl-C
    in one line and INTERRUPTED, never in a traceback. Tests call the wrapped main, as users do."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except BadInput as err:
            print(f"error: {err}", file=sys.stderr)
            return BAD_INPUT
        except KeyboardInterrupt as err:  # its message, where a command gives one: how to continue
            print("\ninterrupted" + (f": {err}" if str(err) else ""), file=sys.stderr)
            return INTERRUPTED

    return run
