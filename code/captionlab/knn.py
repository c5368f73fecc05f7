"""Nearest-neighbour consensus captioning: the baseline that trains nothing (Devlin et al. 2015,
"Exploring Nearest Neighbor Approaches for Image Captioning").

For an image, take the ``k`` reference images nearest by cosine of the frozen encoder's pooled feature;
of all their captions, write the one with the highest mean CIDEr-D against the others (document
frequencies from the reference captions). On a few hundred photographs this lookup is as good as many
trained captioners, so every real-photo table carries it (``benchmarks/real_photos.py``, notebook 08).

Features come from the feature cache (``training/feature_cache.py``): the same files a frozen-encoder
training run of the same encoder builds and reads, so the lookup costs no second encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .data.dataset import CaptionDataset, ImageRecord
from .data.datastore import Datastore, pooled_cache
from .data.images import build_transform
from .data.ptb import ptb_tokenize
from .data.tokenizers import build_tokenizer, scoring_text
from .metrics.cider import DocumentFrequency, cider_d
from .models import build_model
from .training.feature_cache import build_or_open, cache_key

DEFAULT_K = 30


def consensus(candidates: Sequence[str], df: DocumentFrequency, text: Callable[[str], str] = ptb_tokenize) -> int:
    """Index of the candidate whose mean CIDEr-D against the other candidates is highest (ties: first)."""
    return int(np.argmax(consensus_scores([candidates], df, text)[0]))


def consensus_scores(
    groups: Sequence[Sequence[str]], df: DocumentFrequency, text: Callable[[str], str] = ptb_tokenize
) -> list[np.ndarray]:
    """For each group of candidate captions, each one's mean CIDEr-D against the rest of its group;
    ``text``: caption -> the scorer's tokens (``scoring_text``)."""
    words = [[text(c) for c in g] for g in groups]
    cands, refs = {}, {}
    for gi, g in enumerate(words):
        for ci, c in enumerate(g):
            cands[gi, ci] = [c]
            refs[gi, ci] = [r for j, r in enumerate(g) if j != ci] or [c]
    _, per = cider_d(cands, refs, df)
    out, at = [], 0
    for g in words:
        out.append(per[at : at + len(g)])
        at += len(g)
    return out


class NearestNeighbourCaptioner:
    """Reference images (their pooled features in a ``Datastore``) and their raw captions."""

    def __init__(
        self,
        features: torch.Tensor,
        captions: Sequence[Sequence[str]],
        k: int = DEFAULT_K,
        text: Callable[[str], str] = ptb_tokenize,
    ) -> None:
        self.store = Datastore()
        self.store.fill(features, torch.zeros(len(captions), 0, 0, dtype=torch.long))
        self.captions = [list(c) for c in captions]
        self.k, self.text = k, text
        self.df = DocumentFrequency.from_references({i: [text(c) for c in g] for i, g in enumerate(self.captions)})

    def caption_features(self, feats: torch.Tensor, chunk: int = 16) -> list[str]:
        """feats (B, D) or (B, regions, C) -> one caption each, chosen from its neighbours' captions."""
        out: list[str] = []
        for s in range(0, feats.size(0), chunk):  # bounded memory: k * 5 candidates against each other
            rows = self.store.nearest(feats[s : s + chunk], self.k, exclude_same=False)  # (b, k)
            groups = [[c for r in row.tolist() for c in self.captions[r]] for row in rows]
            out += [g[int(np.argmax(sc))] for g, sc in zip(groups, consensus_scores(groups, self.df, self.text))]
        return out


def split_features(
    cfg: RunConfig, records: Sequence[ImageRecord], cache_dir: str | Path, progress: bool = False
) -> torch.Tensor:
    """Pooled features (N, D) of ``records`` by the frozen encoder of ``cfg``'s model, from the feature
    cache in ``cache_dir`` (built there first where missing, under the same name training would use)."""
    torch.manual_seed(0)  # the encoder is pretrained; the rest of the model is never run
    model = build_model(cfg.model, 8).eval()
    transform = build_transform(cfg.data.image_size, cfg.data.resize, *model.image_norm)
    path = Path(cache_dir) / f"{cache_key(model, cfg.model, records, transform)}.npy"
    feats = build_or_open(model, records, transform, path, torch.device("cpu"), progress=progress)
    return pooled_cache(feats)


def knn_captions(
    cfg: RunConfig,
    dataset: CaptionDataset,
    split: str,
    cache_dir: str | Path,
    k: int = DEFAULT_K,
    reference: str = "train",
    progress: bool = False,
) -> dict[int, str]:
    """image_id -> consensus caption for every image of ``split``, its neighbours from ``reference``."""
    refs = [r for r in dataset.split(reference) if r.captions]
    text = scoring_text(build_tokenizer(cfg.data.tokenizer))
    knn = NearestNeighbourCaptioner(split_features(cfg, refs, cache_dir, progress), [r.captions for r in refs], k, text)
    records = dataset.split(split)
    caps = knn.caption_features(split_features(cfg, records, cache_dir, progress))
    return {r.image_id: c for r, c in zip(records, caps)}
