"""Caption metrics: the pycocoevalcap reference scorer (fast in-process CIDEr-D comes with SCST)."""
from .coco import ALL_METRICS, FAST_METRICS, KEY_ORDER, JavaMissingError, load_annotations, load_results, score, score_files

__all__ = ["ALL_METRICS", "FAST_METRICS", "KEY_ORDER", "JavaMissingError", "load_annotations", "load_results",
           "score", "score_files"]
