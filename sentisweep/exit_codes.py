"""The exit status of every command (README, "Exit codes"): one table, tested per entry point."""

OK = 0  # done; every trial ok (or skipped, in a sweep)
FAILED = 1  # done, but a trial or a stage failed: its row says why
BAD_INPUT = 2  # bad arguments, config or data, or an output that would be overwritten: nothing ran
SKIPPED = 3  # one trial (python -m sentisweep.train) that cannot run here: its row says why
# done, but a tuning cell found no setting (its seeds did not run) or a search had no finished trial:
# the numbers the user asked for do not exist; the last lines name each cell and its trials' errors
TUNING_FAILED = 4
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); a sweep or search continues with --resume


def run(main) -> int:
    """A command's `main()`, with Ctrl-C ending it in one line and INTERRUPTED, not a traceback."""
    import sys

    try:
        return main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
