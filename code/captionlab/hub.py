"""Loading Hugging Face models and tokenizers from a local directory or a Hub id: the small layer that
models, data (a language model's tokenizer) and metrics (CLIPScore) share, below all of them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .errors import InputError
from .weights import model_dir


def require_dir(path: str | Path | None, key: str) -> Path:
    """The local model directory behind config ``key``: a directory, or a Hub repository id resolved
    through the cache or a download (``weights.model_dir``); else a message saying what belongs there."""
    return model_dir(path, key)


def quiet() -> None:
    """transformers' per-load progress bars would flood training logs. Its warnings stay on: what they
    said about a load (weights missing or unused) ``from_pretrained_checked`` turns into our own errors."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def from_pretrained_checked(cls: Any, where: str | Path, key: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(where)``, refusing a directory that leaves parameters of ``cls`` without
    weights (a model of another architecture would train from random weights in silence); weights that
    ``cls`` does not use are one warning line (a whole CLIP given for its vision tower is fine)."""
    from transformers.utils import logging as hf_logging

    quiet()
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its own notice about the same keys is replaced by the lines below
    try:
        model, info = cls.from_pretrained(str(where), local_files_only=True, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or ())
    if missing or info.get("mismatched_keys"):
        names = missing or [str(m[0]) if isinstance(m, tuple) else str(m) for m in info["mismatched_keys"]]
        raise InputError(
            f"{key}: {where} has no weights (or weights of another shape) for {len(names)} parameters of "
            f"{cls.__name__}, e.g. {', '.join(names[:3])}: it holds another architecture; they would train "
            "from random values"
        )
    unused = sorted(info.get("unexpected_keys") or ())
    if unused:
        warnings.warn(
            f"{key}: {len(unused)} weights in {where} are not used by {cls.__name__} (e.g. {', '.join(unused[:3])}); "
            "fine for a larger model's directory (a whole CLIP for its vision tower), else check the directory",
            stacklevel=2,
        )
    return model
