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


def resolve_device_and_precision(requested: str) -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - GPU only
        if requested == "auto":
            return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "cuda", requested
    problem = precision_problem("cpu", requested)
    if problem:
        raise IncompatibleMethodError(problem)
    return "cpu", "fp32"


def release_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - GPU only
        torch.cuda.empty_cache()


def cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
