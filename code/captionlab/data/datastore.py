"""The retrieval datastore: one row per reference image, its pooled encoder feature and its captions.

It is data, not weights: ``retrieval_transformer`` keeps it as buffers (so a checkpoint carries it and
``caption``/``evaluate``/``serve`` need nothing else), and it can be replaced by another captioned set
without retraining. The nearest-neighbour consensus baseline (``captionlab.knn``) searches the same
rows. A search is one matrix product of unit vectors (cosine similarity) and a top-k.

Leave-one-out: ``nearest(..., exclude_same=True)`` never returns a row whose feature is the query's
own (cosine above ``SAME``): at training an image's own captions are never among those it is given,
or the model would learn to copy them; an exact duplicate photograph filed under another id is left
out too, for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .vocab import Vocabulary

PER_IMAGE = 5  # captions kept per reference image (Flickr and COCO have 5; more are cut)
SAME = 0.999  # cosine at which two pooled features are one photograph (float16 storage keeps ~1 - 1e-6)


def pooled(feats: torch.Tensor) -> torch.Tensor:
    """Encoder output (B, regions, C) or (B, C) -> (B, C): the mean over regions."""
    return feats.float().mean(1) if feats.dim() == 3 else feats.float()


def pooled_cache(features: Any, chunk: int = 512) -> torch.Tensor:
    """A feature cache's rows (N, regions, C), float16 and memory-mapped -> pooled (N, C) float32, read
    ``chunk`` rows at a time so that a large cache never sits in memory whole."""
    return torch.cat(
        [
            pooled(torch.from_numpy(np.asarray(features[i : i + chunk], np.float32)))
            for i in range(0, len(features), chunk)
        ]
    )


def pad_captions(captions: Sequence[Sequence[Sequence[int]]], length: int, per_image: int = PER_IMAGE) -> torch.Tensor:
    """Token ids per image (``<start>`` .. ``<end>``) -> (N, per_image, length) without ``<start>``,
    cut to ``length`` and padded with ``<pad>`` (0); an image with fewer captions has empty rows."""
    out = torch.zeros(len(captions), per_image, length, dtype=torch.long)
    for i, caps in enumerate(captions):
        for j, ids in enumerate(list(caps)[:per_image]):
            body = list(ids[1:])[:length]  # drop <start>
            out[i, j, : len(body)] = torch.tensor(body, dtype=torch.long)
    return out


class Datastore(nn.Module):
    """``keys`` (N, D) float16 unit rows and ``captions`` (N, per_image, L) token ids (0 = ``<pad>``).

    Built empty; ``fill`` gives it rows. Its buffers are in the owner's ``state_dict``: loading one
    resizes them to what was saved (a model is built before the size of its datastore is known)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(0, 0, dtype=torch.float16))
        self.register_buffer("captions", torch.zeros(0, 0, 0, dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.size(0)

    def fill(self, features: torch.Tensor, captions: torch.Tensor) -> None:
        """features (N, D) (or (N, regions, C), pooled here), captions (N, per_image, L)."""
        if features.size(0) != captions.size(0):
            raise ValueError(f"{features.size(0)} features for {captions.size(0)} images' captions")
        device = self.keys.device
        self.keys = F.normalize(pooled(features), dim=-1).to(device, torch.float16)
        self.captions = captions.to(device, torch.long)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        for name in ("keys", "captions"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """query (B, D) or (B, regions, C) -> cosine with every row (B, N)."""
        q = F.normalize(pooled(query), dim=-1)
        return q @ self.keys.float().t()

    def nearest(self, query: torch.Tensor, k: int, exclude_same: bool = True, random: bool = False) -> torch.Tensor:
        """The ``k`` rows nearest each query (B, k), nearest first. ``random``: ``k`` rows that have
        nothing to do with the query's content, the same ones every time for the same image (the
        control that shows what retrieval adds); ``exclude_same`` holds for both."""
        if len(self) <= k:
            raise ValueError(f"a datastore of {len(self)} images cannot give {k} neighbours other than the image")
        sim = self.similarity(query)  # (B, N)
        # High-frequency projection of the query: a fixed pseudo-random score per (image, row) that no
        # similarity survives, so near-identical images get unrelated neighbours.
        scores = torch.sin(sim * 1e4 + torch.arange(sim.size(1), device=sim.device) * 0.7) if random else sim
        if exclude_same:
            scores = scores.masked_fill(sim > SAME, -float("inf"))
        return scores.topk(k, dim=1).indices  # (B, k)

    def neighbour_captions(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (B, k) -> their captions (B, k, per_image, L)."""
        return self.captions[rows]


def caption_ids(captions: Sequence[str], vocab: Vocabulary, tokenize, max_len: int) -> list[list[int]]:
    """Reference sentences -> token ids as training encodes them (``<start>`` .. ``<end>``)."""
    return [vocab.encode(tokenize(c), max_len) for c in captions]
