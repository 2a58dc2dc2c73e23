"""What a trial pays to start in a process of its own, and what forking it would save.

The config's first trial, started three ways, N rounds in a rotating order (drift falls on all):
1. in the same process as an earlier trial (what a plain loop's later trials pay);
2. forked from a process that has imported torch, transformers, peft and sentisweep but run
   nothing (a "zygote": no torch op and no CUDA before the fork, so the child starts clean);
3. in a fresh Python interpreter (what every Ray worker pays before its trial, besides Ray's
   own start: the sweeps run each trial in a new worker process).
For each: the seconds outside the trial's own training and evaluation (interpreter, imports,
model and data loading, writing the results), and the training + evaluation seconds.

    python benchmarks/trial_start.py                  # short_trials.yaml's first trial on 96 rows, 4 rounds
    python benchmarks/trial_start.py --smoke-test     # the smoke config, 1 round (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import sweep_overhead as bench  # noqa: E402

IMPORT_BENCH = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks import trial_start as start"


def serve(config: str, cpus: int) -> None:
    """The loop's side: one long-lived process running the trial into each folder it reads on
    stdin, printing its times as a JSON line."""
    for line in sys.stdin:
        began = time.perf_counter()
        times = bench.measured_trial(config, line.strip(), cpus)
        print(json.dumps({**times, "wall": time.perf_counter() - began}), flush=True)


class SameProcess:
    def __init__(self, config: Path, cpus: int, warm_up: Path):
        self.process = subprocess.Popen([sys.executable, "-c", f"{IMPORT_BENCH}; start.serve({str(config)!r}, {cpus})"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self(warm_up)  # the first trial pays the imports and tokenizes: a loop's later trials do not

    def __call__(self, out: Path) -> dict[str, float]:
        self.process.stdin.write(f"{out}\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith('{"'):
                return json.loads(line)
        raise RuntimeError(f"the trial server exited with {self.process.wait()}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def forked(config: Path, cpus: int, out: Path) -> dict[str, float]:
    began = time.perf_counter()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the trial, send its times, never return into the parent's code
        os.close(read_end)
        status = 1
        try:
            os.write(write_end, json.dumps(bench.measured_trial(str(config), str(out), cpus)).encode())
            status = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        sent = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status or not sent:
        raise RuntimeError(f"the forked trial exited with status {status}")
    return {**json.loads(sent), "wall": time.perf_counter() - began}


def fresh(config: Path, cpus: int, out: Path) -> dict[str, float]:
    began = time.perf_counter()
    printed = bench.in_fresh_python(f"import json; print(json.dumps(bench.measured_trial({str(config)!r}, {str(out)!r}, {cpus})))")
    return {**json.loads(printed.strip().splitlines()[-1]), "wall": time.perf_counter() - began}


def shrunk_config(config: Path, rows: int | None, out: Path, cpus: int) -> Path:
    """The config with its first trial only, on `rows` training rows (start-up does not depend
    on them), and an empty cache of its own."""
    raw = yaml.safe_load(config.read_text())
    if rows:
        raw.setdefault("data", {}).update(train_size=rows, eval_size=max(rows // 2, 16), test_size=rows)
    path = out / "shrunk.yaml"
    path.write_text(yaml.safe_dump(raw))
    return bench.benchmark_config(path, cpus, out, 1, "start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "benchmarks" / "configs" / "short_trials.yaml"))
    p.add_argument("--rows", type=int, default=96, help="training rows (0 = the config's)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs (and torch threads) for the trial")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--smoke-test", action="store_true", help="the smoke config's first trial, 1 round")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.config, args.rows, args.rounds = str(ROOT / "sweeps" / "configs" / "smoke.yaml"), 0, 1
    if not hasattr(os, "fork"):
        p.error("forking needs a POSIX system (os.fork)")
    os.chdir(ROOT)  # the configs' relative data sources, in every variant alike
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config = shrunk_config(Path(args.config), args.rows, out, args.cpus)
        print(f"starting {Path(args.config).name}'s first trial three ways, {args.rounds} round(s)", flush=True)
        same_process = SameProcess(config, args.cpus, out / "warm-up")
        # The zygote is this process: the training stack imported, nothing run.
        import peft  # noqa: F401
        import torch  # noqa: F401
        from transformers import Trainer  # noqa: F401

        import sentisweep.train  # noqa: F401

        places = [("in the same process as an earlier trial (a plain loop)", same_process),
                  ("forked from a process with torch, transformers and peft imported",
                   lambda where: forked(config, args.cpus, where)),
                  ("a fresh Python interpreter (as in every new Ray worker)",
                   lambda where: fresh(config, args.cpus, where))]
        seen: dict[str, list[dict[str, float]]] = {name: [] for name, _ in places}
        for index in range(args.rounds):
            shift = index % len(places)
            for position, (name, run) in enumerate(places[shift:] + places[:shift]):
                times = run(out / f"round{index}-{position}")
                seen[name].append(times)
                print(f"  round {index + 1}, {name}: {times['wall'] - times['work']:.2f} s outside "
                      f"training and evaluation", flush=True)
        same_process.close()
    print("\n| how the trial starts | outside training + evaluation s, each round | mean s | "
          "training + evaluation s, mean |\n| --- | --- | ---: | ---: |")
    outside = {name: [t["wall"] - t["work"] for t in runs] for name, runs in seen.items()}
    mean = {name: sum(values) / len(values) for name, values in outside.items()}
    for name, runs in seen.items():
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in outside[name])} | {mean[name]:.2f} | "
              f"{sum(t['work'] for t in runs) / len(runs):.2f} |")
    names = [name for name, _ in places]
    print(f"a fresh interpreter: {mean[names[2]] - mean[names[1]]:+.2f} s a trial against a fork, "
          f"{mean[names[2]] - mean[names[0]]:+.2f} s against the same process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
