"""Dropout with uniform-draw masks: the same dropout as torch's, only plain nn.Dropout swapped."""

from __future__ import annotations

import pytest
import torch

from sentisweep.trial.dropout import UniformMaskDropout, draw_dropout_from_uniform

pytestmark = pytest.mark.unit


def test_keeps_one_minus_p_scaled_and_backward_uses_the_same_mask():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Dropout(0.25))
    assert draw_dropout_from_uniform(layer) == 1 and type(layer[0]) is UniformMaskDropout
    x = torch.full((400, 500), 2.0, requires_grad=True)
    y = layer(x)
    kept = y != 0
    # 200,000 draws: the kept share's standard error is 0.001, so 0.005 is 5 of them
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0 / 0.75))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.75)


def test_evaluation_p_zero_and_inplace_run_as_torchs_dropout():
    x = torch.randn(8, 16)
    layer = UniformMaskDropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(UniformMaskDropout(0.0).train()(x), x)
    inplace = UniformMaskDropout(0.5, inplace=True).train()
    y = x.clone()
    assert inplace(y) is y  # torch's own in-place path


def test_only_plain_dropouts_change():
    class Custom(torch.nn.Dropout):
        pass

    model = torch.nn.Sequential(torch.nn.Dropout(0.1), Custom(0.1), torch.nn.Linear(2, 2), torch.nn.Dropout(0.2))
    assert draw_dropout_from_uniform(model) == 2
    assert [type(m).__name__ for m in model] == ["UniformMaskDropout", "Custom", "Linear", "UniformMaskDropout"]
    assert model[3].p == 0.2
