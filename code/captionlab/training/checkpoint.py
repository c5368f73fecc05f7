"""Checkpoints: plain tensors and Python types only (``torch.load(weights_only=True)`` reads them),
written to a temporary file and renamed, so an interrupted write never leaves a broken file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


def save_checkpoint(path: str | Path, *, model_state: dict[str, torch.Tensor], config: dict[str, Any],
                    vocab: list[str], epoch: int, metrics: dict[str, float] | None = None,
                    optimizer: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT, "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "config": config, "vocab": list(vocab), "epoch": int(epoch), "metrics": dict(metrics or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer
    if extra:
        payload["extra"] = extra
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        raise ValueError(f"{path}: not a readable captionlab checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a captionlab checkpoint of format {FORMAT}")
    return ckpt
