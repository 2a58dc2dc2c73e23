"""Packed oneDNN linears: same outputs as torch's, only plain fp32 linears replaced."""

from __future__ import annotations

import copy

import pytest
import torch

from sentisweep.probe import onednn
from sentisweep.probe.embeddings import Embedder, load_backbone

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN linear ops")]


def test_packed_model_gives_the_same_hidden_states(cache_dir):
    embedder = Embedder("tiny-bert", max_length=64, cache_dir=str(cache_dir))
    assert embedder.packed_linears > 0  # the embedder packs on CPU by itself
    unpacked, _ = load_backbone(embedder.spec, None, str(cache_dir))
    linears = sum(type(m) is torch.nn.Linear for m in unpacked.modules())
    packed = copy.deepcopy(unpacked)
    assert onednn.pack_linears(packed) == linears == embedder.packed_linears
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    ids = embedder.tokenizer(["a long and truly dreadful film", "fine"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = unpacked(**ids).last_hidden_state
        got = packed(**ids).last_hidden_state
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-5


def test_only_plain_fp32_linears_are_packed():
    class Adapter(torch.nn.Linear):  # a subclass, as bitsandbytes' and peft's layers are
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), Adapter(8, 8), torch.nn.Linear(8, 2).to(torch.bfloat16),
                                torch.nn.Linear(8, 3, bias=False))
    x = torch.randn(5, 4)
    with torch.inference_mode():
        expected = model[1](model[0](x))
    assert onednn.pack_linears(model) == 2
    assert [type(m).__name__ for m in model] == ["PackedLinear", "Adapter", "Linear", "PackedLinear"]
    with torch.inference_mode():
        assert torch.allclose(model[1](model[0](x)), expected, atol=1e-6)
        assert model[3](torch.ones(2, 8)).shape == (2, 3)  # no bias


def test_without_the_ops_nothing_changes(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert onednn.pack_linears(model) == 0 and type(model[0]) is torch.nn.Linear
