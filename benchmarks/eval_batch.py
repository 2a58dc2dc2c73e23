"""Evaluation throughput against the batch size: rows/s of a model's forward pass (what a
trial's validation and test do) at each batch size, at one thread as each sweep trial runs, all
in this one process, each batch size measured twice in alternation.

    python benchmarks/eval_batch.py                    # MiniLM-L6 (offline), 128 tokens, 256 rows
    python benchmarks/eval_batch.py --smoke-test       # tiny-bert, seconds (the tests run it)

The rows are random token ids of exactly --length tokens: the quick sweep's tail-truncated
reviews are 128 tokens but for 3.5% padding, so padding is not what is measured.
"""

from __future__ import annotations

import argparse
import time

from sentisweep.config import MethodConfig
from sentisweep.trial.methods import LoadOptions, build
from sentisweep.trial.models import get_model_spec, set_quiet


def rows_per_second(model, input_ids, batch_size: int) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(input_ids), batch_size):
            batch = input_ids[first:first + batch_size]
            model(input_ids=batch, attention_mask=torch.ones_like(batch))
    return len(input_ids) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--length", type=int, default=128, help="tokens per row")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--batches", default="64,32,16,8", help="batch sizes; the first is the baseline")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a sweep trial's 1 CPU: 1)")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.model, args.rows, args.length = "tiny-bert", 32, 32
    import torch

    set_quiet(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(MethodConfig(name="full"), get_model_spec(args.model), 2, LoadOptions()).model.eval()
    input_ids = torch.randint(1000, model.config.vocab_size, (args.rows, args.length))
    sizes = [int(b) for b in args.batches.split(",")]
    rows_per_second(model, input_ids[: sizes[0]], sizes[0])  # warm-up: the first call allocates
    speeds = {size: [] for size in sizes}
    for _ in range(2):  # alternated, so a slow moment of the machine falls on several sizes
        for size in sizes:
            speeds[size].append(rows_per_second(model, input_ids, size))
    base = max(speeds[sizes[0]])
    print(f"{args.model}, {args.rows} rows of {args.length} tokens, {args.threads} thread(s); best of 2 each")
    print(f"| batch | rows/s | vs batch {sizes[0]} |\n| ---: | ---: | ---: |")
    for size in sizes:
        print(f"| {size} | {max(speeds[size]):.1f} | {max(speeds[size]) / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
