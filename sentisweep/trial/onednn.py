"""fp32 linears through oneDNN on CPU: pre-packed for inference, and in training too.

Why: torch's default fp32 matmul on CPU is MKL's sgemm, and MKL takes its AVX2 code path on
AMD processors. Measured on this machine (AMD EPYC with AVX-512, 2 threads, 2048^3):
`torch.mm` 216 GFLOP/s, oneDNN's inner product on a pre-packed weight 483 GFLOP/s. The
MiniLM-L6 embedder spends 71% of its time in linears (torch.profiler, 200 IMDb reviews at
length 512), and runs 1.68x faster with them packed (28 -> 47 texts/s, max difference 6e-7).

This is the kernel Inductor itself emits for a frozen CPU linear
(`torch.compile` with `torch._inductor.config.freezing = True` reached the same 47-49
texts/s), without the compile: 11-20 s per process on 2 cores, a C++ compiler on every
node, and again in every Ray Data actor. Both ops are torch's (`torch.ops.mkldnn`), not
public API: `available()` checks they exist, and without them models run unchanged.
A packed weight has no gradient, so training takes another form (`train_through_onednn`): each
linear's three matmuls (forward, the input's gradient, the weight's gradient) each call oneDNN's
inner product on a weight reordered for it at the call. Reordering is O(in x out), the matmul
O(rows x in x out): at batch 16 x 128 tokens 1/2048 of it. Measured on this machine (one
thread, MiniLM-L6's FFN linear 384 -> 1536 at 2,048 rows, forward and backward): torch 102.7 ms
(71 GFLOP/s), through oneDNN 42.2 ms (172 GFLOP/s), results equal to 1e-6 relative.

Where it pays (`faster_here`): all of the above was measured on an AMD EPYC with AVX-512. On an
AMD EPYC with AVX2 only (Zen 3, 2026-12-06), MKL's AVX2 path is the CPU's best and oneDNN's was
the slower: the same FFN linear forward and backward 93-101 ms through torch, 120-126 ms
through oneDNN at one thread; 2048^3 `torch.mm` 86 GFLOP/s, packed 74; a LoRA trial 8% slower
(benchmarks/README.md). So by default the linears go through oneDNN only on AVX-512 CPUs.
"""

from __future__ import annotations

import torch


def available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def faster_here() -> bool:
    """Whether this CPU is one where oneDNN's linears were measured faster than torch's: one with
    AVX-512 (above)."""
    return available() and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def wanted(setting: bool | str) -> bool:
    """A trial's `training.onednn_linears`: true, false, or auto (where `faster_here`)."""
    return faster_here() if setting == "auto" else bool(setting)


class PackedLinear(torch.nn.Module):
    """`linear` (an fp32 `torch.nn.Linear`) with its weight packed once for oneDNN."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # batch size None: one packing for every number of rows (lengths vary per batch)
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN packed"


def _plain_fp32_cpu_linear(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return type(module) is torch.nn.Linear and weight.dtype == torch.float32 and weight.device.type == "cpu"


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every plain fp32 `nn.Linear` of an eval-mode CPU model by its packed form, in
    place; returns how many. Subclasses (bitsandbytes' 4-bit layers, peft's adapter layers)
    and other dtypes stay as they are."""
    if not available():
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _plain_fp32_cpu_linear(child):
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    return replaced


def _inner_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias), by oneDNN's inner product; `weight` is (out, in) as nn.Linear's."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """nn.Linear's function with its forward and backward matmuls through oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        # the input is kept only for the weight's gradient: a frozen base keeps none (as torch's own)
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return _inner_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = _inner_product(grad, weight.t())  # (.., out) @ (out, in)
        if ctx.needs_input_grad[1]:
            grad_weight = _inner_product(rows.t(), x.reshape(-1, x.shape[-1]).t())  # (out, rows) @ (rows, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(torch.nn.Linear):
    """An nn.Linear (its parameters, state dict and place in peft's wrappers unchanged) whose fp32
    CPU matmuls, forward and backward, run through oneDNN; anything else runs as nn.Linear's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32 and x.device.type == "cpu":
            return _OneDNNLinearFunction.apply(x, self.weight, self.bias)
        return super().forward(x)


def train_through_onednn(model: torch.nn.Module) -> int:
    """Make every plain fp32 CPU `nn.Linear` of `model` a `OneDNNLinear`, in place (its class only:
    nothing is copied, hooks and optimizers see the same parameters); returns how many.
    Subclasses (bitsandbytes' 4-bit layers) stay as they are; peft's adapter layers hold plain
    linears (the base layer, LoRA's A and B), which change."""
    if not available():
        return 0
    changed = 0
    for module in model.modules():
        if _plain_fp32_cpu_linear(module):
            module.__class__ = OneDNNLinear
            changed += 1
    return changed
