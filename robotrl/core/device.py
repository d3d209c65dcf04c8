"""Device and thread selection: `auto` picks a GPU when one is present, so moving to a GPU is a config change."""

from __future__ import annotations

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N|mps` into a torch.device, failing clearly when the asked-for device is missing."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{spec}' was requested but torch sees no CUDA GPU; use device: auto or cpu")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was requested but is not available; use device: auto or cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"unknown device '{spec}': use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        raise ValueError(f"device '{spec}' was requested but torch sees only {count} CUDA GPU(s) "
                         f"(cuda:0 to cuda:{count - 1}); use device: auto, cuda or a lower index")
    return device


def set_torch_threads(num_threads: int | None) -> None:
    """Set intra-op threads (small MLPs are fastest on 1-2 threads; None keeps torch's default)."""
    if num_threads is not None and num_threads > 0:
        torch.set_num_threads(num_threads)
