"""Which device and precision a trial runs on, and what the device is called."""

from __future__ import annotations

from pathlib import Path

from sentisweep.trial.methods import IncompatibleMethodError


def precision_problem(device: str, requested: str) -> str | None:
    """Why `requested` cannot run on `device`, or None (the dry run and the trial ask alike)."""
    if device == "cpu" and requested in ("fp16", "bf16"):
        return (f"training.precision = {requested!r}: half precision is for CUDA; on CPU use fp32 or "
                "auto (these CPUs have no bf16 matrix units: bf16 runs 2.5-4x slower than fp32)")
    return None


def resolve_device_and_precision(requested: str, device: str = "auto") -> tuple[str, str]:
    """(device, precision) for a trial. `auto` precision on CUDA is bf16 where the GPU has bf16
    units (compute capability 8.0 and later: A100, L4, H100), else fp16: T4 and V100 report
    bf16 as supported through emulation, which runs far slower than fp16."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device = 'cuda': this trial was given a GPU, but CUDA is not available in "
                           "its process (no driver, or CUDA_VISIBLE_DEVICES hides it); it would have trained on CPU")
    if device != "cpu" and torch.cuda.is_available():
        if requested == "auto":
            major, _ = torch.cuda.get_device_capability()
            return "cuda", "bf16" if major >= 8 else "fp16"
        return "cuda", requested
    problem = precision_problem("cpu", requested)
    if problem:
        raise IncompatibleMethodError(problem)
    return "cpu", "fp32"


def inference_autocast(device: str):
    """How fp32 weights run inference: on CUDA in bf16 (where the GPU has bf16 units) or fp16
    autocast, with TF32 matmuls for what stays fp32; on CPU as they are (no bf16 units here)."""
    import contextlib

    import torch

    if not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True  # pragma: no cover - GPU only
    return torch.autocast("cuda", dtype=cuda_half_dtype())  # pragma: no cover - GPU only


def cuda_half_dtype():
    """bf16 where the GPU has bf16 units (compute capability 8.0 and later), else fp16: a T4 or
    V100 runs bf16 through emulation, far slower."""
    import torch

    major, _ = torch.cuda.get_device_capability()  # pragma: no cover - GPU only
    return torch.bfloat16 if major >= 8 else torch.float16  # pragma: no cover - GPU only


def cap_gpu_memory(share: float | None, device: str) -> int | None:
    """Cap this process's CUDA memory at `share` of the GPU when it shares one (share < 1).
    Returns the cap in bytes, or None where nothing is capped (CPU, a whole GPU)."""
    if device != "cuda" or share is None or share >= 1:
        return None
    import torch

    torch.cuda.set_per_process_memory_fraction(share)
    return int(share * torch.cuda.get_device_properties(0).total_memory)


def release_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - GPU only
        torch.cuda.empty_cache()


def cpu_name() -> str:
    """The CPU's model name and the widest vector unit torch uses on it, e.g. "AMD EPYC (AVX2)":
    two machines both named "AMD EPYC", one with AVX-512 and one without, had fp32 matmul peaks of
    500 and 146 GFLOP/s (benchmarks/README.md), so a row's speed says which it ran on."""
    import platform

    import torch

    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"
