"""Batches: padded on the right to their own longest row; training batches optionally grouped by length.

Length grouping (`training.group_by_length`, off by default) cuts padding from 20% to about
1% at max_length 256 but costs accuracy: measured on MiniLM-L6 (2,000 IMDb rows, 1 epoch,
3 seeds, benchmarks/README.md) about 1.1-1.2 points for full fine-tuning and for LoRA. When
it is on, batches are formed as the Trainer's `group_by_length` forms them but served in a
shuffled order: the Trainer walks each sorted mega-batch long -> short, which cost more
(1.6 points on one seed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def pad_right(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded on the right to the longest sequence."""
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, ids in enumerate(sequences):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)  # copies: rows read from Parquet are read-only arrays
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_token_id: int):
    """For inference: (row indices, input_ids, attention_mask) per batch, longest texts first
    (memory peaks at once, not at the end); each batch padded only to its own longest row."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for begin in range(0, len(order), batch_size):
        rows = order[begin:begin + batch_size]
        yield rows, *pad_right([sequences[i] for i in rows], pad_token_id)


class ShuffledLengthGroups(torch.utils.data.Sampler[int]):
    """Indices such that each run of `batch_size` holds rows of similar length, and the
    batches come in random order. Each epoch (each `iter`) draws a new grouping from one
    seeded generator: the same seed gives the same batches, epoch after epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega_batch_batches: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        # A mega-batch of 50 batches x 16 rows = 800 rows is sorted by length and cut into
        # batches; larger mega-batches mean less padding but batches of fewer distinct rows.
        self.mega_batch_rows = batch_size * mega_batch_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.mega_batch_rows):
            mega = sorted(order[start:start + self.mega_batch_rows], key=self.lengths.__getitem__)
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        # The DataLoader cuts this index stream every batch_size rows: a short batch (the end
        # of the last mega-batch) must come last or it would shift every batch after it.
        return sorted(shuffled, key=lambda batch: len(batch) < self.batch_size)

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch
