"""Training objectives as strategies: the trainer calls ``loss(model, images, captions, idx)`` and does
not care which one it drives (cross-entropy here; self-critical in scst.py). ``idx`` are the batch's
record indices in the training set, for losses that need each image's full references."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.vocab import Vocabulary


class CrossEntropyLoss:
    """Teacher forcing: predict captions[:, 1:] from captions[:, :-1]; padding ignored."""

    name = "xe"

    def __call__(self, model: nn.Module, images: torch.Tensor, captions: torch.Tensor,
                 idx: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(images, captions)  # (batch, T-1, vocab)
        target = captions[:, 1:]  # (batch, T-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1),
                               ignore_index=Vocabulary.pad_id)
        return loss, {"loss": float(loss.detach())}
