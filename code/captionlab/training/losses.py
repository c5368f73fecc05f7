"""Training objectives as strategies: the trainer calls ``loss(model, images, captions, idx)`` and does
not care which one it drives (cross-entropy here; self-critical in scst.py). ``idx`` are the batch's
record indices in the training set, for losses that need each image's full references."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data.vocab import Vocabulary
from ..registry import Registry

# train.loss name -> a function of the train config that builds the strategy. A new loss is one
# Objective subclass registered in its module, which training/objectives.py imports.
LOSSES: Registry[Callable[[Any], Objective]] = Registry("loss")


class Objective:
    """What the trainer asks of a training objective, with the defaults of plain teacher forcing:
    ``loss_fn(model, images, captions, idx) -> (loss, stats)``, ``idx`` the batch's record indices
    (so a loss can look up every reference of an image)."""

    name: ClassVar[str] = ""
    # It decodes through init_state/step, which DDP's hooks never see: the trainer averages gradients by hand.
    needs_raw_model: ClassVar[bool] = False

    def prepare(
        self, records: Sequence[Any], words: Callable, text: Callable[[str], str], bad_endings: Any = None
    ) -> None:
        """Called once with the training records before the first step (SCST builds its reward here);
        ``bad_endings``: the ids decode.bad_endings bars <end> after, for losses that decode."""

    def validate(self, captioner: Any, dataset: Any, cfg: Any, progress: bool) -> dict[str, float] | None:
        """The val metrics that pick best.pt, or None: the trainer's captioning metrics."""
        return None

    def __call__(
        self, model: nn.Module, images: torch.Tensor, captions: torch.Tensor, idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class CrossEntropyLoss(Objective):
    """Teacher forcing: predict captions[:, 1:] from captions[:, :-1]; padding ignored. For a model
    that reports its attention (``attention_maps`` after ``forward``), the doubly stochastic term of
    Xu et al. is added: ``attention_reg * mean over captions of sum_regions (1 - sum_t alpha_t)^2``,
    pushing the model to look at every region over the caption."""

    name = "xe"

    def __init__(self, attention_reg: float = 0.0, label_smoothing: float = 0.0) -> None:
        self.attention_reg, self.label_smoothing = attention_reg, label_smoothing

    def __call__(
        self, model: nn.Module, images: torch.Tensor, captions: torch.Tensor, idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(images, captions)  # (batch, T-1, vocab)
        target = captions[:, 1:]  # (batch, T-1)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            target.reshape(-1),
            ignore_index=Vocabulary.pad_id,
            label_smoothing=self.label_smoothing,
        )
        stats = {"loss": float(loss.detach())}
        alphas = getattr(model, "module", model).attention_maps  # DDP keeps the model in .module
        if self.attention_reg > 0 and alphas is not None:
            mask = (target != Vocabulary.pad_id).unsqueeze(-1).to(alphas.dtype)  # (B*n, T-1, 1)
            coverage = (alphas.float() * mask).sum(1)  # (B*n, regions): attention each region got
            reg = self.attention_reg * ((1.0 - coverage) ** 2).sum(1).mean()
            stats["attention_reg"] = float(reg.detach())
            loss = loss + reg
        return loss, stats


@LOSSES.register("xe")
def _cross_entropy(t: Any) -> CrossEntropyLoss:
    return CrossEntropyLoss(t.attention_reg, t.label_smoothing)
