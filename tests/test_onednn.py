"""Packed oneDNN linears: same outputs as torch's, only plain fp32 linears replaced."""

from __future__ import annotations

import copy

import pytest
import torch

from sentisweep.probe.embeddings import Embedder, load_backbone
from sentisweep.trial import onednn

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN linear ops")]


def test_packed_model_gives_the_same_hidden_states(cache_dir, monkeypatch):
    monkeypatch.setattr(onednn, "faster_here", lambda: True)  # whatever this machine's CPU
    embedder = Embedder("tiny-bert", max_length=64, cache_dir=str(cache_dir))
    assert embedder.packed_linears > 0  # the embedder packs on such a CPU by itself
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


@pytest.mark.parametrize("capability, faster", [("AVX512", True), ("AVX512_BF16", True), ("AVX2", False),
                                                 ("DEFAULT", False)])
def test_onednn_is_the_default_only_on_cpus_where_it_was_measured_faster(monkeypatch, capability, faster):
    """On an AVX-512 EPYC oneDNN's linears were 2.4x torch's; on an AVX2-only one 0.8x (onednn.py)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert onednn.faster_here() is faster and onednn.wanted("auto") is faster
    assert onednn.wanted(True) and not onednn.wanted(False)  # a config's own choice stands on any CPU


def test_where_onednn_is_the_slower_the_embedder_packs_nothing(cache_dir, monkeypatch):
    monkeypatch.setattr(onednn, "faster_here", lambda: False)
    embedder = Embedder("tiny-bert", max_length=64, cache_dir=str(cache_dir))
    assert embedder.packed_linears == 0
    assert not any("Packed" in type(m).__name__ for m in embedder.model.modules())


def test_without_the_ops_nothing_changes(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert onednn.pack_linears(model) == 0 and type(model[0]) is torch.nn.Linear


def test_training_through_onednn_gives_torchs_outputs_and_gradients():
    """Issue 39: training's linears through oneDNN (2.4x torch's MKL matmul on these AMD cores):
    the same outputs and gradients as nn.Linear's, for a trained and a frozen weight, and a
    frozen weight keeps no input for its backward pass (no more memory than torch's own)."""
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(), torch.nn.Linear(32, 5, bias=False))
    reference[0].weight.requires_grad_(False)  # a frozen base layer, as LoRA's
    model = copy.deepcopy(reference)
    assert onednn.train_through_onednn(model) == 2
    assert [type(m).__name__ for m in model] == ["OneDNNLinear", "GELU", "OneDNNLinear"]
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(3, 7, 12, requires_grad=True)
    expected, got = reference(x), model(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert got.grad_fn.saved_tensors[0] is not None  # the last layer's input, for its trained weight
    first = model[0](x)
    assert first.grad_fn.saved_tensors[0] is None  # the frozen one kept no input
    grads = torch.autograd.grad(expected.square().sum(), [x, reference[2].weight, reference[0].bias])
    got_grads = torch.autograd.grad(got.square().sum(), [x, model[2].weight, model[0].bias])
    for want, have in zip(grads, got_grads, strict=True):
        assert torch.allclose(have, want, rtol=1e-4, atol=1e-5)


def test_training_through_onednn_leaves_other_linears_and_dtypes_alone():
    class Quantized(torch.nn.Linear):  # a subclass, as bitsandbytes' 4-bit layers are
        pass

    model = torch.nn.Sequential(Quantized(4, 4), torch.nn.Linear(4, 4).to(torch.bfloat16), torch.nn.Linear(4, 2))
    assert onednn.train_through_onednn(model) == 1
    assert [type(m).__name__ for m in model] == ["Quantized", "Linear", "OneDNNLinear"]
    layer = model[2]
    assert layer(torch.ones(1, 4, dtype=torch.float64).float()).dtype == torch.float32
    layer.double()  # another dtype runs as nn.Linear's
    assert layer(torch.ones(1, 4, dtype=torch.float64)).dtype == torch.float64


def test_a_trial_trains_through_onednn_on_cpu_as_it_did_through_torch(tmp_path, data_dir, cache_dir):
    """The row says how many linears ran through oneDNN; with `onednn_linears: false` none did, and
    the two runs of one seed log the same losses and test loss (to fp32 rounding)."""
    import pandas as pd

    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.run import run_trial

    results = {}
    for through in (True, False):
        config = parse_trial_config({
            "model": "tiny-bert", "method": {"name": "lora", "r": 4}, "seed": 3,
            "output_dir": str(tmp_path / str(through)),
            "data": {"source": str(data_dir), "train_size": 64, "eval_size": 16, "test_size": 32,
                     "cache_dir": str(cache_dir)},
            "training": {"max_steps": 4, "batch_size": 8, "max_length": 32, "learning_rate": 1e-3,
                         "logging_steps": 1, "keep_checkpoint": False, "onednn_linears": through}})
        results[through] = run_trial(config, overwrite=True)
    assert results[True].status == results[False].status == "ok"
    # tiny-bert: 2 layers x 6 linears (q, k, v, attention out, FFN in, FFN out); the pooler and the
    # classifier with peft's trained copies of both (modules_to_save); LoRA's A and B beside each of
    # the 4 attention linears (its default placement) of each layer: 12 + 4 + 16
    assert results[True].onednn_linears == 32 and not results[False].onednn_linears
    # which CPU, with the vector unit that decides oneDNN's default (e.g. "AMD EPYC (AVX2)")
    assert results[True].device_name.endswith(f" ({torch.backends.cpu.get_cpu_capability()})")
    # and both drew their dropout masks from uniform draws (the default; the same masks for one
    # seed): tiny-bert's embedding dropout; per layer LoRA's 4, the attention probabilities' (p 0:
    # it stays a no-op) and 2 on the hidden states; the classifier's: 1 + 2 x 7 + 1
    assert results[True].uniform_dropouts == results[False].uniform_dropouts == 16
    losses = {k: pd.read_parquet(r.history_path)["loss"].dropna().to_numpy() for k, r in results.items()}
    assert len(losses[True]) == 4 and abs(losses[True] - losses[False]).max() < 1e-4
    assert abs(results[True].eval_loss - results[False].eval_loss) < 1e-4
