"""Captioning models. Importing this package registers every model family."""

from . import attention, clip_gpt, clipcap, dual_encoder, show_tell, transformer  # noqa: F401  (registers every model family by name)
from .base import CaptionModel, State
from .registry import MODELS, build_model

__all__ = ["CaptionModel", "State", "MODELS", "build_model"]
