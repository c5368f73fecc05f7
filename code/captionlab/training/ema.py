"""An exponential moving average of the weights (``train.ema_decay``), the "mean teacher" that CaMEL
(Barraco et al. 2022) captions with. On a few hundred photographs the weights of one epoch are noisy;
their running average validates, and is saved as ``best.pt``, instead of the last step's. The raw
weights keep training (``last.pt`` holds both, so a resume continues the same average)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """``shadow = decay * shadow + (1 - decay) * weights`` after every optimiser step, over the floating
    parameters. The decay ramps up as ``(1 + n) / (10 + n)`` over the first steps (as timm's ModelEmaV3
    warm-up does), so early averages do not hold on to the random initialisation."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.shadow = {k: p.detach().clone() for k, p in self._params(model)}

    @staticmethod
    def _params(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        return ((k, p) for k, p in model.named_parameters() if p.dtype.is_floating_point)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in self._params(model):
            self.shadow[k].lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside, ``model`` holds the averaged weights (to validate and save them); its own after."""
        own = {k: p.detach().clone() for k, p in self._params(model)}
        self._copy(model, self.shadow)
        try:
            yield
        finally:
            self._copy(model, own)

    @staticmethod
    @torch.no_grad()
    def _copy(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
        for k, p in model.named_parameters():
            if k in values:
                p.copy_(values[k])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
