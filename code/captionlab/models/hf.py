"""Hugging Face models from local directories, and their key/value caches as ``State`` entries.

Real weights load with ``from_pretrained(local_files_only=True)`` from a directory laid out as
``save_pretrained`` writes it: the one a config key names, or the Hugging Face cache's snapshot of a
repository id, downloaded first where the network allows (``weights.py``). Anything missing fails with
a message naming the config key and what to put there. Tests build tiny random models of the same classes
(``models/tiny_hf.py``) and load them back through this same path.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..hub import from_pretrained_checked, require_dir

with warnings.catch_warnings():  # transformers imports tqdm.auto, which warns about ipywidgets in a notebook:
    warnings.filterwarnings("ignore", message="IProgress not found")  # import it once, quietly, first
    import tqdm.auto  # noqa: F401

CACHE_PREFIX = "lm_"


def load_pretrained(cls: Any, path: str | Path | None, key: str) -> Any:
    return from_pretrained_checked(cls, require_dir(path, key), key)


# ---------------------------------------------------------------- key/value cache <-> State
# transformers 5 hands back a Cache object; the decoding engine needs plain batch-first tensors it
# can reorder (State.select). These two functions are the only place the two meet.


def cache_to_state(cache: Any) -> dict[str, torch.Tensor]:
    """A transformers Cache -> {lm_k{i}, lm_v{i}: (rows, heads, t, head_dim)}."""
    out = {}
    for i, layer in enumerate(cache.layers):
        out[f"{CACHE_PREFIX}k{i}"], out[f"{CACHE_PREFIX}v{i}"] = layer.keys, layer.values
    return out


def state_to_cache(state: dict[str, torch.Tensor], layers: int) -> Any:
    from transformers import DynamicCache

    return DynamicCache(
        ddp_cache_data=[(state[f"{CACHE_PREFIX}k{i}"], state[f"{CACHE_PREFIX}v{i}"]) for i in range(layers)]
    )
