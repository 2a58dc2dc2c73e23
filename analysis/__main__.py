"""python -m analysis {report,compare} ..."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentisweep import exit_codes


def resolve_method(name: str, methods: list[str]) -> str:
    """The one `model / variant` that `name` means: itself, its variant, or its variant's start.

    `full` finds `minilm-l6 / full-lr5e-05` (the quick sweep labels variants by what differs
    from the defaults), but only when no other method matches too: with two models `full` is
    ambiguous, and guessing would compare the wrong pair without a word.
    """
    from sentisweep.results import ResultsError

    if name in methods:
        return name
    variant = {method: method.split(" / ", 1)[1] for method in methods}
    exact = [method for method in methods if variant[method] == name]
    matches = exact or [method for method in methods if variant[method].startswith(name + "-")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ResultsError(f"{name!r} matches {len(matches)} methods: {matches}; name one of them in full")
    raise ResultsError(f"{name!r} is not among the successful methods: {methods}")


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Turn sentisweep results stores into tables, figures and significance tests.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report", help="build report.html / report.md / summary.json and the tables and figures",
        description="Read one or more results stores (a sweep's storage folder, its results.parquet, or "
                    "a folder of trial results) and write the report into --out.")
    report.add_argument("results", nargs="+", help="results stores or files")
    report.add_argument("--out", required=True,
                        help="folder for the report; an earlier report there is replaced whole once the new one is "
                             "written, and a folder holding anything else is refused")
    report.add_argument("--within", type=float, default=1.0, metavar="POINTS",
                        help="a multi-objective search: name the cheapest trial within this many accuracy points "
                             "of the best validation accuracy (default 1.0)")
    pair = commands.add_parser(
        "compare", help="significance of one pair of methods on the same test rows",
        description="A and B are 'model / variant' names as the report shows them, or a variant (or the "
                    "start of one) that only one model has, e.g. `lora-r8-attention` and `full` for "
                    "`minilm-l6 / full-lr5e-05`.")
    pair.add_argument("results", nargs="+", help="results stores or files (those of the report)")
    pair.add_argument("a")
    pair.add_argument("b")
    args = parser.parse_args(argv)

    from analysis.load import ResultsError, load_results, split_by_status

    if args.command == "report":
        from analysis.report import build_report

        if args.within < 0:
            raise ResultsError(f"--within = {args.within:g}: must be 0 or more (accuracy points below the best)")
        _, screen = build_report(args.results, Path(args.out), args.within)
        print(screen)
        return exit_codes.OK
    from analysis.report import group_correctness
    from analysis.significance import compare

    ok, _ = split_by_status(load_results(args.results))
    groups = group_correctness(ok)
    a, b = (resolve_method(name, sorted(groups)) for name in (args.a, args.b))
    if a == b:
        raise ResultsError(f"{args.a!r} and {args.b!r} are both {a!r}: name two different methods")
    result = compare(a, groups[a], b, groups[b])
    for key, value in result.as_row().items():
        print(f"{key:>12}: {value}")
    untuned = ok.loc[ok["tuning"] == "untuned"]
    for name in sorted({a, b} & set(untuned["model"] + " / " + untuned["variant"])):  # the report leaves these out
        print(f"WARNING: {name} ran untuned (--untuned-fallback): its tuning found no setting, so this compares "
              "it at its configured settings, not at its best")
    return exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
