"""The checkpoint format, read by training and inference alike (so it lives below both).

Plain tensors and Python types only (``torch.load(weights_only=True)`` reads them), written to a
temporary file and renamed, so an interrupted write never leaves a broken file.

Format 2: ``epoch`` counts completed epochs (1-based, as the console and log.csv do). Format 1
counted from 0; it is read and converted.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, MissingError
from .files import atomic_write

FORMAT = 2
REQUIRED = ("model", "config", "vocab", "epoch")
WHAT = "a captionlab checkpoint is the best.pt / last.pt that 'captionlab train' writes under output/model_ckpt/<run>/"


class CheckpointError(InputError):
    """A file that is not a usable captionlab checkpoint; the message says what it is not, in one line."""


def save_checkpoint(
    path: str | Path,
    *,
    model_state: dict[str, torch.Tensor],
    config: dict[str, Any],
    vocab: list[str] | dict[str, Any],
    epoch: int,
    metrics: dict[str, float] | None = None,
    optimizer: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    assets: dict[str, Any] | None = None,
) -> Path:
    """``epoch``: how many epochs are complete. ``vocab``: a word list, or (models that use a language
    model's tokenizer) a dict of that tokenizer's files. ``assets``: what rebuilding the model needs
    beyond its config and weights (ClipCap: the CLIP and GPT-2 architectures)."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "config": config,
        "vocab": vocab if isinstance(vocab, dict) else list(vocab),
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer
    if extra:
        payload["extra"] = extra
    if assets:
        payload["assets"] = assets
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), "checkpoint")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise MissingError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; {WHAT}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a captionlab checkpoint; {WHAT}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises many types; its messages suggest weights_only=False, never do that
        if zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is a PyTorch file holding Python objects beyond tensors and plain "
                f"types (another tool's?), which captionlab does not unpickle; {WHAT}"
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (not a file torch.save wrote, or truncated); {WHAT}"
        ) from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a captionlab checkpoint (it has no 'format' entry); {WHAT}"
        )
    fmt = ckpt["format"]
    if not isinstance(fmt, int) or fmt > FORMAT or fmt < 1:
        raise CheckpointError(
            f"{path} has checkpoint format {fmt!r}; this captionlab reads formats 1 to {FORMAT} "
            "(a newer captionlab wrote it: upgrade)"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete captionlab checkpoint: missing {', '.join(missing)}; {WHAT}")
    if fmt == 1:  # epochs counted from 0
        ckpt["epoch"] = int(ckpt["epoch"]) + 1
        best = ckpt.get("extra", {}).get("best")
        if isinstance(best, dict) and "epoch" in best:
            best["epoch"] = int(best["epoch"]) + 1
        ckpt["format"] = FORMAT
    return ckpt
