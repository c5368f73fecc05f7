"""Models are built by name: ``model.name`` in a config picks the class."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..registry import CAPTIONERS_KIND, TOWERS_KIND, Registry

MODELS: Registry[type] = Registry(CAPTIONERS_KIND)  # captioners: what decoding, evaluate, caption and serve load
TOWERS: Registry[type] = Registry(TOWERS_KIND)  # the dual encoder: trained, never decoded


def model_class(name: str) -> type:
    """The class ``model.name`` names: a captioner, or a pre-training model."""
    return TOWERS.get(name) if name in TOWERS else MODELS.get(name)


def build_model(cfg: ModelConfig, vocab_size: int, vocab: Any = None, assets: dict[str, Any] | None = None):
    """``vocab`` and ``assets`` (architectures a checkpoint saved) reach the models that need them:
    those whose text goes through a language model's own tokenizer (``uses_lm_vocab``)."""
    cls = model_class(cfg.name)
    if cls.uses_lm_vocab:
        return cls(cfg, vocab_size, vocab=vocab, assets=assets)
    return cls(cfg, vocab_size)
