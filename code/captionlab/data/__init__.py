"""Datasets, vocabulary, tokenizers, adapters and the synthetic default."""

from .adapters import ADAPTERS, load_dataset
from .dataset import CaptionDataset, CaptionGroups, ImageItems, ImageRecord
from .images import BadImageError, build_transform, load_image, to_rgb
from .tokenizers import TOKENIZERS, build_tokenizer
from .vocab import Vocabulary

__all__ = [
    "ADAPTERS",
    "load_dataset",
    "CaptionDataset",
    "CaptionGroups",
    "ImageItems",
    "ImageRecord",
    "BadImageError",
    "build_transform",
    "load_image",
    "to_rgb",
    "TOKENIZERS",
    "build_tokenizer",
    "Vocabulary",
]
