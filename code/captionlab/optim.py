"""The one optimiser step that every training loop here takes: the Trainer's (cross-entropy, SCST,
pre-training), vlm-finetune's LoRA step and the tiny stand-in language models' (``models/tiny_hf.py``).
It sits in the ground layer so that a loop below ``training/`` can take it too."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Iterable[torch.nn.Parameter],
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    sync: Callable[[], None] | None = None,
) -> None:
    """Gradients of ``loss`` (scaled under AMP), ``sync`` (where DDP cannot average them, done by hand),
    clipped to a global norm of ``grad_clip`` when it is > 0 (on unscaled gradients), then the step."""
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if sync is not None:
        sync()
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
