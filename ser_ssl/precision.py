"""``auto_precision``: the training precision that is fast on the hardware at hand.

Lower precision only pays where the hardware has matrix units for it. Measured with ``make bench``
(docs/benchmarks.md): on an AVX2 AMD EPYC without bf16 instructions a bf16-autocast training step
ran at 0.13x the fp32 one; on an Intel Xeon with AMX it ran 1.57x plain fp32 and level with
channels-last fp32. On GPUs with bf16 tensor cores (compute capability 8.0 and up) bf16 autocast is
the standard choice; older tensor-core GPUs get fp16 autocast with loss scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on: the accelerator kind and its capabilities."""

    accelerator: str  # "cuda", "cpu", or another Lightning accelerator name
    name: str = ""  # device or CPU model, for the log line
    cuda_capability: tuple[int, int] | None = None
    cpu_flags: frozenset[str] = frozenset()


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where ``/proc/cpuinfo`` is not there."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def detect(accelerator: str = "auto") -> Hardware:
    """The hardware a Trainer with ``accelerator`` will train on (``auto``: CUDA when available)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return Hardware("cuda", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    if accelerator in ("auto", "cpu") or accelerator in ("gpu", "cuda"):
        return Hardware("cpu", cpu_model(), cpu_flags=cpu_flags())
    return Hardware(accelerator)


def choose_precision(hw: Hardware) -> tuple[str, str]:
    """``(Lightning precision, why)`` for ``hw``."""
    if hw.accelerator == "cuda":
        major = (hw.cuda_capability or (0, 0))[0]
        if major >= 8:
            return "bf16-mixed", f"{hw.name} has bf16 tensor cores (compute capability {major}.x)"
        if major >= 7:
            return "16-mixed", f"{hw.name} has fp16 but no bf16 tensor cores (compute capability {major}.x)"
        return "32-true", f"{hw.name} has no tensor cores"
    if hw.accelerator == "cpu":
        if "amx_bf16" in hw.cpu_flags:
            return "bf16-mixed", f"{hw.name} has AMX bf16 matrix units"
        return "32-true", f"{hw.name} has no AMX bf16 units (bf16 would emulate: 0.13x fp32 measured)"
    return "32-true", f"no precision rule for accelerator '{hw.accelerator}'"
