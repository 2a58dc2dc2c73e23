"""Embedding throughput: the published notebook loop against sentisweep's embedder and the
Ray Data job, on the same reviews and model, in one run.

(a) the notebook loop: batches of 8 in dataset order, padded to the longest (up to 512),
    mean over *all* positions, `no_grad`;
(b) `sentisweep.probe.embeddings.Embedder` in this process: length-sorted batches of 8, linears
    through oneDNN with packed weights on an AVX-512 CPU (`sentisweep/trial/onednn.py`; torch's own
    on other CPUs, where oneDNN was the slower), masked mean;
(c) `ray_jobs/embed.py`'s pipeline: Ray Data, 2 actors of 0.5 CPU and 1 thread each.

Prints texts/s of each and the ratios, the max |(b) - (a) with masked pooling| (same maths,
other batching), the min cosine between (a)'s padded mean and the masked one, (b)'s model
FLOPs utilisation against this machine's fp32 matmul peak measured at the start (the faster
of torch.mm, MKL's sgemm, and oneDNN on a packed weight; also against torch.mm's alone), and
how many times the useful FLOPs (a) computes: what removing padding alone can gain; the rest
of (b)/(a) is (b)'s faster linears.

    python benchmarks/embed_throughput.py                 # minilm-l6, 2,000 IMDb test reviews, max_length 512
    python benchmarks/embed_throughput.py --smoke-test    # tiny-bert, 64 texts (the tests run it)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from train_throughput import (
    report_peak,  # a sibling script: benchmarks/ is on the path of `python benchmarks/x.py`
)

from sentisweep.config import DataConfig, default_cache_dir
from sentisweep.probe.embeddings import Embedder, load_backbone
from sentisweep.trial.data import load_task_data
from sentisweep.trial.models import set_quiet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "imdb"


def notebook_loop(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 8):
    """(padded-mean embeddings, masked-mean embeddings, seconds, positions, squared lengths):
    the study's loop, with the masked mean computed from the same hidden states for the
    comparison (not timed apart), and the work it computes (every row at its batch's length)."""
    import torch

    padded, masked = [], []
    positions, squared_lengths = 0, 0.0
    start = time.perf_counter()
    with torch.no_grad():
        for begin in range(0, len(texts), batch_size):
            batch = tokenizer(texts[begin:begin + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            padded.append(hidden.mean(dim=1).numpy())
            weights = batch["attention_mask"].unsqueeze(-1).float()
            masked.append(((hidden * weights).sum(dim=1) / weights.sum(dim=1)).numpy())
            rows, length = batch["input_ids"].shape
            positions += rows * length
            squared_lengths += rows * length ** 2
    return np.concatenate(padded), np.concatenate(masked), time.perf_counter() - start, positions, squared_lengths


def forward_gflop(model, tokens: float, squared_lengths: float) -> float:
    """Forward FLOPs: 2 x non-embedding parameters per token, plus attention (QK^T and AV:
    2 x 2 x L^2 x d per layer per text). Real tokens only: the useful FLOPs; all positions:
    what a padded batch computes."""
    import torch

    embedding_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    body = sum(p.numel() for p in model.parameters()) - embedding_params
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    dim = getattr(config, "hidden_size", None) or config.dim
    return (2 * body * tokens + 4 * layers * dim * squared_lengths) / 1e9


def ray_pipeline(args, frame) -> float:
    """Seconds for ray_jobs/embed.py's pipeline on these rows (Ray already started, so the
    time is the pipeline's: actor start-up and model load included, `ray.init` not)."""
    import tempfile

    from ray_jobs import embed
    from ray_session.connect import connect
    from sentisweep.storage import Store

    connect(True, 0)
    with tempfile.TemporaryDirectory() as out:
        job = embed.EmbedJob(model=args.model, out=out, pooling="mean", max_length=args.max_length, batch_size=8,
                             splits=("test",), concurrency=2,
                             data=DataConfig(source=str(args.data), cache_dir=args.cache_dir))
        start = time.perf_counter()
        embed.embed_splits({"test": frame}, job, Store(out), 0.0, {"model": args.model})
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--cache-dir", default=default_cache_dir(), help="default: as a trial config's data.cache_dir")
    p.add_argument("--no-ray", action="store_true", help="skip (c)")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.model, args.texts, args.max_length = "tiny-bert", 64, 64
    set_quiet(True)
    import torch

    torch.set_num_threads(2)
    peaks = report_peak(512 if args.smoke_test else 2048)
    peak = max(peaks.values())
    frame = load_task_data(DataConfig(source=str(args.data), test_size=args.texts, eval_size=16)).splits["test"]
    texts = frame["text"].tolist()

    embedder = Embedder(args.model, pooling="mean", max_length=args.max_length, batch_size=8,
                        cache_dir=args.cache_dir)
    # (a) runs the model as loaded (torch's own linears); on an AVX-512 CPU the Embedder has packed its own copy.
    plain_model, _ = load_backbone(embedder.spec, None, args.cache_dir)
    print(f"(a) notebook loop on {len(texts)} texts ...", flush=True)
    padded_mean, masked_mean, seconds_a, positions_a, squared_a = notebook_loop(
        plain_model, embedder.tokenizer, texts, args.max_length)
    print("(b) sentisweep Embedder ...", flush=True)
    embedder.embed(texts[:8])  # warm-up, as (a) had its first batch
    embedder.stats = type(embedder.stats)()
    start = time.perf_counter()
    ours = embedder.embed(texts)
    seconds_b = time.perf_counter() - start
    useful = forward_gflop(plain_model, embedder.stats.real_tokens, embedder.stats.squared_lengths)
    computed_a = forward_gflop(plain_model, positions_a, squared_a)  # (a)'s padding included
    rows = [("(a) notebook loop: batches of 8, dataset order, mean over padding", seconds_a),
            ("(b) Embedder: length-sorted batches of 8, oneDNN linears, masked mean", seconds_b)]
    if not args.no_ray:
        print("(c) Ray Data job (2 actors x 0.5 CPU) ...", flush=True)
        rows.append(("(c) ray_jobs/embed.py: Ray Data, 2 actors", ray_pipeline(args, frame)))

    print("\n| run | seconds | texts/s | vs (a) |\n| --- | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {len(texts) / seconds:.1f} | {seconds_a / seconds:.2f}x |")
    norms = np.linalg.norm(padded_mean, axis=1) * np.linalg.norm(masked_mean, axis=1)
    cosine = (padded_mean * masked_mean).sum(1) / norms
    print(f"\nmax |(b) - (a) with masked pooling|: {np.abs(ours - masked_mean).max():.2e}")
    print(f"min cosine, (a)'s mean over padding vs the masked mean: {cosine.min():.3f}")
    padding = 1 - embedder.stats.real_tokens / embedder.stats.positions
    print(f"(b): {embedder.stats.real_tokens} real tokens, padding {padding:.1%} "
          f"of positions; MFU {useful / seconds_b / peak:.0%} of the {peak:.0f} GFLOP/s peak on useful FLOPs "
          f"({useful / seconds_b / peaks['torch.mm']:.0%} of torch.mm's {peaks['torch.mm']:.0f})")
    # (b)/(a) beyond (a)'s padding factor: (b) runs faster per FLOP (its oneDNN linears).
    print(f"(a): computes {computed_a / useful:.2f}x the useful FLOPs (padding, attention over padded lengths); "
          f"{useful / seconds_a / peak:.0%} of the peak on useful FLOPs, "
          f"{computed_a / seconds_a / peak:.0%} on all it computes")
    if len(rows) == 3:
        print(f"(c) / (b): {seconds_b / rows[2][1]:.2f} of (b)'s throughput")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
