"""``train.loss`` -> the training objective. Importing this module registers every loss."""

from __future__ import annotations

from typing import Any

from . import contrastive, scst  # noqa: F401  (each registers its loss under its train.loss name)
from .losses import LOSSES, Objective


def build_loss(train_cfg: Any) -> Objective:
    """The objective named by ``train.loss``, built from the train config."""
    return LOSSES.get(train_cfg.loss)(train_cfg)
