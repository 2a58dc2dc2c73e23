"""The training sampler: length-grouped batches, in shuffled order, every row once."""

from __future__ import annotations

import numpy as np
import pytest

from sentisweep.trial.batching import ShuffledLengthGroups

pytestmark = pytest.mark.unit


def cut(indices: list[int], batch_size: int) -> list[list[int]]:
    """What the DataLoader does with the sampler's index stream."""
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


def test_every_row_once_and_short_batch_last():
    lengths = np.random.default_rng(0).integers(10, 256, size=1003).tolist()
    sampler = ShuffledLengthGroups(lengths, batch_size=16, seed=1, mega_batch_batches=10)
    indices = list(sampler)
    assert sorted(indices) == list(range(1003)) and len(sampler) == 1003
    # 1003 = 6 mega-batches of 160 + 43 rows: 62 full batches, then 43 rows -> 2 full + 11.
    # Cutting the stream every 16 rows must give back the sampler's own batches.
    assert cut(indices, 16) == sampler.__class__(lengths, 16, 1, 10).batches()


def test_batches_are_length_homogeneous_but_not_length_ordered():
    lengths = np.random.default_rng(0).integers(10, 256, size=2000).tolist()
    batches = ShuffledLengthGroups(lengths, batch_size=16, seed=3).batches()
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 10  # random batches of 16 from 10..255 spread ~200 tokens
    longest = [max(lengths[i] for i in b) for b in batches]
    # The Trainer's grouping serves each mega-batch longest-first (rank correlation near -1
    # within a mega-batch); shuffled batches show no trend along the epoch.
    assert abs(np.corrcoef(np.arange(len(longest)), longest)[0, 1]) < 0.2


def test_same_seed_same_batches_new_grouping_each_epoch():
    lengths = list(range(100))
    a, b = ShuffledLengthGroups(lengths, 8, seed=5), ShuffledLengthGroups(lengths, 8, seed=5)
    first = list(a)
    assert first == list(b)
    assert list(a) != first  # epoch 2 draws a new order

