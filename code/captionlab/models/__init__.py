"""Captioning models. Importing this package registers every model family: a module in this folder
registers its classes by name (``@MODELS.register``), so a new family is one new file here."""

import importlib
import pkgutil

from .base import CaptionModel, State, TrainableModel
from .registry import MODELS, TOWERS, build_model, model_class

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CaptionModel", "State", "TrainableModel", "MODELS", "TOWERS", "build_model", "model_class"]
