"""Captioning models. Importing this package registers every model family."""
from . import attention, show_tell  # noqa: F401  (registers show_attend_tell, adaptive_attention, cnn_gru, show_tell)
from .base import CaptionModel, State
from .registry import MODELS, build_model

__all__ = ["CaptionModel", "State", "MODELS", "build_model"]
