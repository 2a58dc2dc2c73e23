"""What several test files build: small review data, tiny trial configs, config files."""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from sentisweep.probe.embeddings import META_KEY
from sentisweep.storage import write_parquet_atomic

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # beside the checkout, where it exists
SHARED_IMDB = SHARED_DATA / "imdb"
KUBERAY_SCHEMAS = SHARED_DATA.parent / "schemas" / "kuberay"  # KubeRay's CRDs, as ../shared holds them

_POSITIVE = ["great", "wonderful", "moving", "brilliant", "funny", "superb", "loved"]
_NEGATIVE = ["awful", "boring", "dull", "terrible", "weak", "hated", "clumsy"]
_FILLER = ["the", "film", "plot", "actors", "story", "scene", "was", "and", "a", "movie", "ending"]


def synthetic_reviews(n: int, seed: int) -> pd.DataFrame:
    """Balanced reviews of varied length whose label follows their sentiment words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(_FILLER) for _ in range(rng.randint(4, 40))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words)), rng.choice(_POSITIVE if label else _NEGATIVE))
        rows.append({"text": " ".join(words) + ("<br /><br />the end" if i % 5 == 0 else ""), "label": label})
    return pd.DataFrame(rows)


def tiny_trial(model: str, method: str | dict, data_dir: Path, cache_dir: Path, out: Path, **training) -> dict:
    """A raw trial config that trains a few steps on the synthetic data."""
    return {
        "model": model, "method": method, "seed": 7, "output_dir": str(out),
        "data": {"source": str(data_dir), "train_size": 64, "eval_size": 16, "test_size": 32,
                 "cache_dir": str(cache_dir)},
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "max_length": 64,
                     "learning_rate": 1e-3, "logging_steps": 1, **training},
    }


def write_config(path: Path, config: dict, command: str) -> Path:
    """A test's own config file, opening with the command that runs it, as the shipped ones do."""
    import yaml

    path.write_text(f"# {command}\n" + yaml.safe_dump(config))
    return path


def write_split(folder, split, matrix, labels, **meta):
    """One split of embeddings as ray_jobs/embed.py writes it."""
    table = pa.table({"row_id": pa.array(np.arange(len(labels))), "label": pa.array(labels, pa.int64()),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).reshape(-1)),
                                                                     matrix.shape[1])})
    meta = {"model": "tiny-bert", "checkpoint": "pretrained", "pooling": "cls", "max_length": 64,
            "label_names": ["neg", "pos"], "seconds": 1.0, **meta}
    write_parquet_atomic(table.replace_schema_metadata({META_KEY: json.dumps(meta)}), folder / f"{split}.parquet")


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8-d points of two classes apart by a margin (an easy probe)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    shift = np.array([3.0, -2.0, 0, 0, 0, 0, 1.0, 0])  # margin |shift| / 2 = 1.8 sd: Bayes accuracy ~96%
    return rng.normal(size=(n, 8)) + labels[:, None] * shift, labels


def start_postgres():
    """A PostgreSQL server of its own on loopback (Debian's package: initdb, pg_ctl), for a
    search's study: (its SQLAlchemy URL, a function that stops it), or None if not installed.
    As root, the server runs as the user postgres (it refuses root), in a folder of its own
    (pytest's are closed to other users)."""
    import glob
    import os
    import shutil
    import subprocess
    import tempfile

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = binaries[-1] if binaries else shutil.which("initdb")
    if not initdb:
        return None
    bin_dir = Path(initdb).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="sentisweep-postgres-"))
    if as_user:
        shutil.chown(folder, "postgres")
    from simcluster import free_ports

    [port] = free_ports(1)
    data = folder / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "sentisweep"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "sentisweep", "studies"],
                   check=True, capture_output=True)
    url = f"postgresql+psycopg2://sentisweep@127.0.0.1:{port}/studies"

    def stop():
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

    return url, stop


def head_ports() -> tuple[dict[str, int], dict[str, str]]:
    """Every port `ray start --head` would take at a fixed default, made free and distinct:
    its flags, and the two metrics servers' variables. Fixed, two Rays on one machine share a
    port; drawn one at a time, one Ray is given a port twice (see simcluster.free_ports). The
    dashboard's and the autoscaler's Prometheus ports, 44227 and 44217, lie inside the range the
    OS draws from, so another drawn port could be one of them."""
    from simcluster import free_ports

    flags = ["--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    variables = ["DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT"]
    ports = free_ports(len(flags) + len(variables))
    return (dict(zip(flags, ports[:len(flags)], strict=True)),
            {name: str(port) for name, port in zip(variables, ports[len(flags):], strict=True)})


def kill_tagged(variable: str, tag: str, rounds: int = 10) -> int:
    """SIGKILL every process whose environment has `variable=tag`: the processes a test started
    (and their children, which inherit it), never another user's. Again until none is left: a
    raylet restarts its agents when they die first. Returns how many."""
    import signal
    import time

    import psutil

    killed = 0
    for _ in range(rounds):
        found = []
        for process in psutil.process_iter():
            try:
                if process.pid != os.getpid() and process.environ().get(variable) == tag:
                    found.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    return killed


def default_sigint() -> None:
    """A child's `preexec_fn` for a test that sends it Ctrl-C: SIGINT handled as a terminal's
    process gets it. A suite started from a background job inherits SIGINT ignored, exec keeps
    that, and Python then never raises KeyboardInterrupt (issue 36: two Ctrl-C tests timed out)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


NOT_INSTALLED = "not installed here:"


def not_installed(what: str) -> None:
    """Skip: a tool this test needs is missing (a failure where .ci/run installed it: tests/conftest.py)."""
    import pytest

    pytest.skip(f"{NOT_INSTALLED} {what}")


# what sentisweep writes, by name or kind; Ray writes none of these in its session folder
OUR_NAMES = {"chosen.json", "optuna.journal", "best_trial.yaml", "sentisweep_trial.json"}
OUR_SUFFIXES = {".parquet", ".safetensors", ".jsonl"}


def our_files(folder: Path) -> list[Path]:
    """Files of ours under `folder` (Ray's session folder must hold none: issue 35)."""
    return [f for f in folder.rglob("*") if f.is_file() and (f.name in OUR_NAMES or f.suffix in OUR_SUFFIXES)]


@functools.cache
def kuberay_crd(plural: str) -> dict:
    """KubeRay's CRD of `plural` (rayjobs, rayclusters), parsed once per process: 1.4 MB of YAML took
    2.7 s in PyYAML's Python loader and 0.4 s in its libyaml one, and three preflight tests loaded two
    CRDs each. Shared: a caller that changes it changes a deep copy."""
    import pytest

    path = KUBERAY_SCHEMAS / f"ray.io_{plural}.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not here (the KubeRay CRDs ship in ../shared)")
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
