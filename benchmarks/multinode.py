"""The same sweep on one Ray node and spread over two, results in S3 both times (moto's server
on loopback), on the simulated cluster of the cluster tests (benchmarks/simcluster.py):

    python benchmarks/multinode.py                # 2 models x 2 methods x 2 seeds, 40 steps each
    python benchmarks/multinode.py --smoke-test   # 2 trials of 4 steps (the tests run it)

Both clusters have a head that runs nothing and 2 CPUs for trials: one worker node with 2, or
two with 1 each, each declaring one GPU so that a trial takes a whole node's share. On one
machine the two nodes share its cores, so the ratio is the price of spreading (scheduling
across raylets, each node's own tokenization cache and model build, uploads), not a speed-up.
Needs root for network namespaces (else separate raylets on loopback; the output says which).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml
from simcluster import (
    SimulatedCluster,  # a sibling: `python benchmarks/multinode.py` puts benchmarks/ on the path
)

ROOT = Path(__file__).resolve().parents[1]


def sweep_config(folder: Path, name: str, smoke: bool) -> Path:
    config = {
        "name": name, "models": ["tiny-bert"] if smoke else ["tiny-bert", "tiny-qwen3"],
        "methods": ["full"] if smoke else ["full", {"name": "lora", "r": 4, "placement": "attention"}],
        "seeds": [1, 2],
        "data": {"source": str(ROOT / "data" / "tiny_reviews"), "train_size": 64, "eval_size": 16,
                 "test_size": 32},
        "training": {"max_steps": 4 if smoke else 40, "batch_size": 8, "eval_batch_size": 16, "max_length": 64},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1},
    }
    path = folder / f"{name}.yaml"
    path.write_text(f"# python sweeps/ablation.py --config {path}\n" + yaml.safe_dump(config))
    return path


def timed_sweep(workers: list[tuple[str, int]], smoke: bool, name: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as work:
        cluster = SimulatedCluster(Path(work))
        try:
            cluster.start_s3("sweeps")
            cluster.start_head()
            for node, cpus in workers:
                cluster.add_worker(node, cpus=cpus, gpus=cpus)  # one declared GPU per trial slot
            config = sweep_config(Path(work), name, smoke)
            start = time.perf_counter()
            done = cluster.run_on_head([sys.executable, str(ROOT / "sweeps" / "ablation.py"), "--config",
                                        str(config), "--storage", "s3://sweeps/results"], cwd=ROOT)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
            return seconds, cluster.mode
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    one, mode = timed_sweep([("w1", 2)], args.smoke_test, "one-node")
    two, _ = timed_sweep([("w1", 1), ("w2", 1)], args.smoke_test, "two-nodes")
    print(f"simulated cluster: {mode}")
    print("| layout | sweep wall s | vs one node |")
    print("| --- | ---: | ---: |")
    print(f"| one worker node, 2 CPUs | {one:.1f} | 1.00 |")
    print(f"| two worker nodes, 1 CPU each | {two:.1f} | {two / one:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
