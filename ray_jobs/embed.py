"""Sentence embeddings of every split with Ray Data, into Parquet.

    python ray_jobs/embed.py --model minilm-l6 --data ../shared/data/imdb --out results/emb/minilm
    python ray_jobs/embed.py --model minilm-l6 --checkpoint <a quick trial>/checkpoint --truncation tail --out ...
    ray job submit --working-dir . -- python ray_jobs/embed.py --model minilm-l6 --out /shared/emb/minilm
    python ray_jobs/embed.py --smoke-test --out /tmp/emb        # tiny model, 96 texts (the tests run it)

read split -> `map_batches(EmbedActor)` (each actor loads the model once; one GPU per actor on
GPU nodes, a fraction of a CPU otherwise) -> `<out>/{train,validation,test}.parquet`:
row_id, label, embedding (fixed-size list of float32), with model, checkpoint, pooling and
max_length in the file's key-value metadata (key `sentisweep`). One embedding, the
model's, is `sentisweep.probe.embeddings.Embedder`; the Ray-specific lines are marked `# [Ray]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from ray_session.autoscale import make_room
from ray_session.connect import DECLARED_GPUS_ONLY, connect
from sentisweep import exit_codes
from sentisweep.config import (
    DEFAULT_MAX_LENGTH,
    POOLINGS,
    ConfigError,
    DataConfig,
    default_cache_dir,
    format_pydantic,
)
from sentisweep.locations import pin_args, pinned_data
from sentisweep.probe.embeddings import (
    DEFAULT_BATCH_SIZE,
    META_KEY,
    Embedder,
    EmbeddingError,
    check_checkpoint,
    check_pooling,
)
from sentisweep.registry import UnknownNameError
from sentisweep.results import now_iso
from sentisweep.screen import elapsed, shown
from sentisweep.storage import Store
from sentisweep.trial.data import check_source
from sentisweep.trial.models import get_model_spec

SPLITS = ("train", "validation", "test")
SMOKE_DATA = Path(__file__).resolve().parents[1] / "data" / "tiny_reviews"  # --smoke-test's data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python ray_jobs/embed.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registry name, hub id or local folder "
                                   "(python -m sentisweep.train --help lists them)")
    p.add_argument("--checkpoint", help="a trial's checkpoint folder (full model or peft adapter, merged); "
                                        "default: the pretrained model")
    p.add_argument("--pooling", choices=POOLINGS, help="default: the model's (registry)")
    p.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="texts per forward pass (sorted by length); 8 is fastest on CPU, GPUs want more (e.g. 64)")
    p.add_argument("--quantize", choices=("4bit", "8bit"), help="load the model quantized (large decoders; "
                                                                "8bit needs a GPU)")
    p.add_argument("--data", default="imdb", help="data source, as in a trial config (default: imdb)")
    p.add_argument("--train-size", type=int)
    p.add_argument("--eval-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--split-seed", type=int, default=0, help="as a sweep's data.split_seed (same seed, same rows)")
    p.add_argument("--truncation", choices=get_args(DataConfig.model_fields["truncation"].annotation), default="head",
                   help="which tokens of a long text: as the checkpoint was trained (the quick sweep's: tail)")
    p.add_argument("--cache-dir", default=default_cache_dir(),
                   help="tokenizer and tiny-model cache (default $SENTISWEEP_CACHE_DIR, else ~/.cache/sentisweep)")
    p.add_argument("--splits", default=",".join(SPLITS), help="which splits to embed")
    p.add_argument("--out", help="output folder for <split>.parquet")
    p.add_argument("--overwrite", action="store_true", help="replace existing embeddings in --out")
    p.add_argument("--concurrency", type=int, default=2, help="embedding actors (each loads the model once)")
    p.add_argument("--cpus-per-actor", type=float, default=0.5,
                   help="Ray CPUs each actor reserves; below 1 leaves room for Ray Data's read tasks "
                        "(a pool holding every CPU starves them and the pipeline hangs)")
    p.add_argument("--gpus-per-actor", type=float, default=None, help="default: 1 when the cluster has GPUs")
    p.add_argument("--rows-per-call", type=int, default=128,
                   help="rows handed to an actor at once (a Ray Data block; rows come longest first, so "
                        "a block holds texts of similar length); at least --batch-size")
    p.add_argument("--local", action="store_true", help="start Ray here even when RAY_ADDRESS is set")
    p.add_argument("--smoke-test", action="store_true", help="tiny-bert, 96 texts, seconds")
    return p


@dataclass
class EmbedJob:
    """What to embed and how: checked in full (`problems`) before Ray starts or a model loads."""

    model: str
    out: str
    data: DataConfig
    checkpoint: str | None = None
    pooling: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    batch_size: int = DEFAULT_BATCH_SIZE
    quantize: str | None = None
    splits: tuple[str, ...] = SPLITS
    overwrite: bool = False
    concurrency: int = 2
    cpus_per_actor: float = 0.5
    gpus_per_actor: float | None = None
    rows_per_call: int = 128

    def problems(self) -> list[str]:
        problems = []
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            problems.append(f"--splits = {','.join(self.splits)!r}: allowed: {', '.join(SPLITS)}")
        for name in ("max_length", "batch_size", "concurrency", "rows_per_call"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} = {getattr(self, name)}: must be at least 1")
        if min(self.rows_per_call, self.batch_size) >= 1 and self.rows_per_call < self.batch_size:
            problems.append(f"--rows-per-call = {self.rows_per_call}: must be at least --batch-size "
                            f"({self.batch_size}), or no forward pass is full")
        try:
            check_pooling(get_model_spec(self.model), self.pooling)
        except (UnknownNameError, EmbeddingError, OSError) as err:
            problems.append(f"--model/--pooling: {err}")
        try:
            check_checkpoint(self.checkpoint, self.data.cache_dir)
        except EmbeddingError as err:
            problems.append(f"--{err}")
        try:
            out = Store(self.out)
        except (OSError, ValueError) as err:  # a file, an unknown scheme, no credentials
            return [*problems, f"--out = {self.out!r}: {err}"]
        if not self.overwrite:
            existing = [out.uri(f"{s}.parquet") for s in self.splits if out.exists(f"{s}.parquet")]
            if existing:
                problems.append(f"--out: {', '.join(existing)} exist; pass --overwrite to replace them "
                                "(nothing was changed)")
        return problems

    def embedder_kwargs(self, threads: int | None) -> dict:
        return {"model": self.model, "checkpoint": self.checkpoint, "pooling": self.pooling,
                "max_length": self.max_length, "batch_size": self.batch_size, "quantize": self.quantize,
                "threads": threads, "cache_dir": self.data.cache_dir, "truncation": self.data.truncation,
                "head_share": self.data.head_share}


def job_from_args(args: argparse.Namespace) -> EmbedJob:
    """The command line as a job; ConfigError listing every problem."""
    problems = []
    if args.smoke_test:
        args.model = args.model or "tiny-bert"
        args.train_size, args.eval_size, args.test_size = (args.train_size or 48, args.eval_size or 16,
                                                           args.test_size or 32)
        args.max_length = min(args.max_length, 64)
        if args.data == "imdb":
            args.data = str(SMOKE_DATA)
    if not args.model:
        problems.append("--model: required (a registry name, hub id or local folder)")
    if not args.out:
        problems.append("--out: required (the folder for <split>.parquet)")
    try:
        data = pinned_data(DataConfig(source=args.data, train_size=args.train_size, eval_size=args.eval_size,
                                      test_size=args.test_size, split_seed=args.split_seed, cache_dir=args.cache_dir,
                                      truncation=args.truncation))
    except ValidationError as err:
        problems += [f"--{p.replace('_', '-')}" for p in format_pydantic(err)]
        data = None
    if problems:
        raise ConfigError(problems, "ray_jobs/embed.py arguments")
    job = EmbedJob(model=args.model, out=args.out, data=data, checkpoint=args.checkpoint, pooling=args.pooling,
                   max_length=args.max_length, batch_size=args.batch_size, quantize=args.quantize,
                   splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()), overwrite=args.overwrite,
                   concurrency=args.concurrency, cpus_per_actor=args.cpus_per_actor,
                   gpus_per_actor=args.gpus_per_actor, rows_per_call=args.rows_per_call)
    # the texts, before Ray starts: a missing source was said only after a local Ray had started
    problems = job.problems() + [p.replace("data.source = ", "--data = ", 1) for p in check_source(job.data)]
    if problems:
        raise ConfigError(problems, "ray_jobs/embed.py arguments")
    return job


class EmbedActor:
    """[Ray] map_batches runs one of these per actor: the model loads once, then embeds
    every batch the actor is handed."""

    def __init__(self, embedder_kwargs: dict, device: str):
        from sentisweep.trial.models import set_quiet

        set_quiet(True)
        self.embedder = Embedder(**embedder_kwargs, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import resource

        vectors = self.embedder.embed([str(t) for t in batch["text"]])
        # The actor is a process of its own: its lifetime peak RSS is the embedding's memory cost.
        peak = np.full(len(vectors), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, dtype=np.int64)
        return {"row_id": batch["row_id"], "label": batch["label"], "split": batch["split"],
                "position": batch["position"], "embedding": vectors, "peak_rss_bytes": peak}


def embed_splits(frames: dict, job: EmbedJob, out: Store, gpus_per_actor: float, extra_meta: dict) -> dict[str, dict]:
    """Embed every split's rows in one Ray Data pipeline (each actor loads the model once)
    and write `<out>/<split>.parquet` whole (a folder or object storage), each only once all
    its rows are in."""
    import pandas as pd
    import ray  # [Ray]

    a = job
    for split, frame in frames.items():
        if len(frame) == 0:
            raise EmbeddingError(f"split {split!r} of {a.data.source!r} has no rows: nothing to embed")
    rows = pd.concat([frame[["row_id", "label", "text"]].assign(split=split, position=np.arange(len(frame)))
                      for split, frame in frames.items()], ignore_index=True)
    # Longest texts first, cut into blocks of similar length: an actor's call pads little (it
    # sorts its rows by tokens again), and the shortest blocks come last, so both actors
    # finish together (longest first) instead of one idling while the other ends a long block.
    rows = rows.iloc[np.argsort(-rows["text"].str.len().to_numpy(), kind="stable")].reset_index(drop=True)
    # A fractional CPU gets OMP_NUM_THREADS=1 from Ray: give each actor its share of the
    # machine's cores explicitly (2 cores / 2 actors = 1 thread each).
    threads = None if gpus_per_actor else max(1, (os.cpu_count() or 1) // a.concurrency)
    dataset = ray.data.from_pandas([rows[i:i + a.rows_per_call]  # [Ray] one block per call, in this order
                                    for i in range(0, len(rows), a.rows_per_call)])
    embedded = dataset.map_batches(  # [Ray]
        EmbedActor, fn_constructor_kwargs={"embedder_kwargs": job.embedder_kwargs(threads),
                                           "device": "cuda" if gpus_per_actor and not os.environ.get(
                                               DECLARED_GPUS_ONLY) else "cpu"},
        batch_size=a.rows_per_call, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=a.concurrency),
        num_cpus=a.cpus_per_actor if not gpus_per_actor else 1, num_gpus=gpus_per_actor or None)
    parts: dict[str, list] = {split: [] for split in frames}
    done, start, peak_rss_bytes, shown_at = 0, time.perf_counter(), 0, 0.0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):  # [Ray] streams as actors finish
        vectors = np.ascontiguousarray(batch["embedding"], dtype=np.float32)
        peak_rss_bytes = max(peak_rss_bytes, int(batch["peak_rss_bytes"].max()))
        for split in parts:
            keep = batch["split"] == split
            if keep.any():
                parts[split].append(pa.table({
                    "position": pa.array(batch["position"][keep]),
                    "row_id": pa.array(batch["row_id"][keep]), "label": pa.array(batch["label"][keep], pa.int64()),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[keep].reshape(-1)),
                                                                   vectors.shape[1])}))
        done, now = done + len(vectors), time.perf_counter()
        if now - shown_at >= 15 or done == len(rows):  # 26,000 texts came in 203 batches: a line each was a flood
            rate, shown_at = done / (now - start), now
            left = f", about {elapsed((len(rows) - done) / rate)} left" if done < len(rows) else ""
            print(f"  {done}/{len(rows)} texts embedded, {rate:.1f} texts/s{left}", flush=True)
    seconds = time.perf_counter() - start
    metas = {}
    for split, tables in parts.items():
        table = pa.concat_tables(tables).sort_by("position").drop_columns("position")  # the split's own order
        metas[split] = {**extra_meta, "split": split, "data_source": a.data.source, "rows": len(table),
                        "dim": table.schema.field("embedding").type.list_size, "job_seconds": seconds,
                        "peak_rss_bytes": peak_rss_bytes,  # the largest embedding actor's
                        # one pipeline embeds all splits: each split's share of the time, by rows
                        "seconds": seconds * len(table) / len(rows), "created": now_iso()}
        out.write_table(table.replace_schema_metadata({META_KEY: json.dumps(metas[split])}), f"{split}.parquet")
    return metas


def run(job: EmbedJob) -> dict[str, dict]:
    """Embed the job's splits (Ray already connected). Returns each split's metadata."""
    import ray  # [Ray]

    from sentisweep.trial.data import load_task_data

    a = job
    data = load_task_data(job.data)
    have_gpus = ray.cluster_resources().get("GPU", 0)  # [Ray]
    gpus = a.gpus_per_actor if a.gpus_per_actor is not None else (1.0 if have_gpus >= 1 else 0.0)
    if a.gpus_per_actor is None and not gpus:  # said aloud: a GPU study must not become a CPU run unnoticed
        print("no GPU in the cluster now: embedding on CPU actors (pass --gpus-per-actor 1 to wait for the GPU "
              "nodes an autoscaler adds)", flush=True)
    elif gpus:
        make_room(1, gpus, a.concurrency, None)  # [Ray] refused, or the GPU nodes an autoscaler adds waited for
    meta = {"model": a.model, "checkpoint": Store(a.checkpoint).uri() if a.checkpoint else "pretrained",
            "pooling": a.pooling or get_model_spec(a.model).pooling, "max_length": a.max_length,
            "label_names": [str(n) for n in data.label_names], "data": job.data.model_dump(mode="json"),
            "device": "GPU" if gpus else "CPU"}  # said on the final lines: the seconds mean little without it
    print(f"embedding {', '.join(f'{s} {len(data.splits[s])}' for s in job.splits)} texts with {a.model} "
          f"({meta['checkpoint']}, {meta['pooling']} pooling, max_length {a.max_length}) on "
          f"{a.concurrency} actor(s), {'1 GPU' if gpus else f'{a.cpus_per_actor:g} CPU'} each", flush=True)
    return embed_splits({s: data.splits[s] for s in job.splits}, job, Store(a.out), gpus, meta)


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pin_args(args)  # before anything leaves this process: Ray's actors run elsewhere
    job = job_from_args(args)
    connect(args.local, None)  # [Ray] RAY_ADDRESS's cluster, or a local one
    metas = run(job)
    for split, meta in metas.items():
        print(f"{split}: {meta['rows']} x {meta['dim']} in {meta['seconds']:.1f} s on {meta['device']} "
              f"-> {Store(job.out).uri(split)}.parquet")
    print(f"next: python ray_jobs/xgboost_stage.py --embeddings {shown(job.out)}   # XGBoost on them")
    return exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
