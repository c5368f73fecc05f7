"""Models are built by name: ``model.name`` in a config picks the class."""
from __future__ import annotations

from ..config import ModelConfig
from ..registry import Registry

MODELS: Registry[type] = Registry("model")


def build_model(cfg: ModelConfig, vocab_size: int):
    return MODELS.get(cfg.name)(cfg, vocab_size)
