"""python -m analysis {report,compare} ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    report.add_argument("--out", required=True, help="folder for the report")
    pair = commands.add_parser(
        "compare", help="significance of one pair of methods on the same test rows",
        description="A and B are 'model / variant' names as the report shows them, or just the variant "
                    "when there is one model, e.g. `lora-r8-attention` and `full`.")
    pair.add_argument("results", help="a results store or file")
    pair.add_argument("a")
    pair.add_argument("b")
    args = parser.parse_args(argv)

    from analysis.load import ResultsError, load_results, split_by_status

    try:
        if args.command == "report":
            from analysis.report import build_report

            path = build_report(args.results, Path(args.out))
            print(f"report: {path}")
            return 0
        from analysis.report import group_correctness
        from analysis.significance import compare

        ok, _ = split_by_status(load_results([args.results]))
        groups = group_correctness(ok)
        names = {name: name for name in groups} | {name.split(" / ", 1)[1]: name for name in groups}
        missing = [n for n in (args.a, args.b) if n not in names]
        if missing:
            raise ResultsError(f"{missing} not among the successful methods: {sorted(groups)}")
        result = compare(names[args.a], groups[names[args.a]], names[args.b], groups[names[args.b]])
        for key, value in result.as_row().items():
            print(f"{key:>12}: {value}")
        return 0
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
