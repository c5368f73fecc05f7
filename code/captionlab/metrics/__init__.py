"""Caption metrics: the pycocoevalcap reference scorer, the fast in-process CIDEr-D, and (on the
synthetic set) per-attribute accuracy."""

from .cider import DocumentFrequency, cider_d
from .coco import (
    ALL_METRICS,
    FAST_METRICS,
    KEY_ORDER,
    JavaMissingError,
    load_annotations,
    load_results,
    score,
    score_files,
)

__all__ = [
    "ALL_METRICS",
    "FAST_METRICS",
    "KEY_ORDER",
    "DocumentFrequency",
    "JavaMissingError",
    "cider_d",
    "load_annotations",
    "load_results",
    "score",
    "score_files",
]
