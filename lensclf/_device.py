"""Where a network runs: ``"auto"`` and device names resolved in one place."""

import torch

__all__ = ["resolve_device"]


def resolve_device(device):
    """The torch device name for ``device`` (``None`` or ``"auto"``: CUDA when available, else the CPU).

    Raises
    ------
    ValueError
        ``device`` is not a torch device, or names CUDA on a machine without it.
    """
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...).") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but CUDA is not available on this machine (no CUDA GPU); use device='auto' or 'cpu'.")
    return str(device)
