"""Inference batches (predict, the embedder), padded on the right to their own longest row.

Training batches are the Trainer's, in random order: grouping them by length cut padding
from 20% to about 1% at max_length 256 but cost 1.1-1.2 accuracy points on MiniLM-L6 (2,000
IMDb rows, 1 epoch, 3 seeds; benchmarks/README.md), so it was removed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_right(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded on the right to the longest sequence."""
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, ids in enumerate(sequences):
        # copies: rows read from Parquet are read-only arrays
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_token_id: int):
    """For inference: (row indices, input_ids, attention_mask) per batch, longest texts first
    (memory peaks at once, not at the end); each batch padded only to its own longest row."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for begin in range(0, len(order), batch_size):
        rows = order[begin:begin + batch_size]
        yield rows, *pad_right([sequences[i] for i in rows], pad_token_id)
