"""Models are built by name: ``model.name`` in a config picks the class."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..registry import Registry

MODELS: Registry[type] = Registry("model")


def build_model(cfg: ModelConfig, vocab_size: int, vocab: Any = None, assets: dict[str, Any] | None = None):
    """``vocab`` and ``assets`` (architectures a checkpoint saved) reach the models that need them:
    those whose text goes through a language model's own tokenizer (``uses_lm_vocab``)."""
    cls = MODELS.get(cfg.name)
    if getattr(cls, "uses_lm_vocab", False):
        return cls(cfg, vocab_size, vocab=vocab, assets=assets)
    return cls(cfg, vocab_size)
