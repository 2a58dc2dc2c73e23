"""fp32 inference linears through oneDNN with pre-packed weights, on CPU.

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
Inference only: the packed weight has no gradient.
"""

from __future__ import annotations

import torch


def available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


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


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every plain fp32 `nn.Linear` of an eval-mode CPU model by its packed form, in
    place; returns how many. Subclasses (bitsandbytes' 4-bit layers, peft's adapter layers)
    and other dtypes stay as they are."""
    if not available():
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is torch.nn.Linear and child.weight.dtype == torch.float32
                    and child.weight.device.type == "cpu"):
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    return replaced
