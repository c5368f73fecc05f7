"""CLIPScore and RefCLIPScore (Hessel et al. 2021), from a CLIP model in a local Hugging Face directory.

CLIP-S(c, v) = w * max(cos(E_text(c), E_image(v)), 0) with w = 2.5; RefCLIP-S is the harmonic mean of
CLIP-S and max(max_r cos(E_text(c), E_text(r)), 0) over the references r. As in the authors' code,
every caption is prefixed with "A photo depicts" before it is embedded. Reported as corpus means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.images import load_image
from ..errors import InputError

W = 2.5
PREFIX = "A photo depicts "


def load_clip(path: str | Path) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPProcessor

    from ..hub import from_pretrained_checked, require_dir

    where = require_dir(path, "--clipscore")
    model = from_pretrained_checked(CLIPModel, where, "--clipscore").eval()
    return model, CLIPProcessor.from_pretrained(str(where), local_files_only=True)


@torch.no_grad()
def _texts(model: Any, processor: Any, texts: Sequence[str], batch: int) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch):
        enc = processor.tokenizer(
            [PREFIX + t for t in texts[i : i + batch]],
            padding=True,
            truncation=True,
            max_length=model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        out.append(F.normalize(_features(model.get_text_features(**enc)), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def _images(model: Any, processor: Any, paths: Sequence[Path], batch: int) -> torch.Tensor:
    out = []
    for i in range(0, len(paths), batch):
        pixels = processor.image_processor([load_image(p) for p in paths[i : i + batch]], return_tensors="pt")
        out.append(F.normalize(_features(model.get_image_features(pixel_values=pixels["pixel_values"])), dim=-1))
    return torch.cat(out)


def _features(x: Any) -> torch.Tensor:
    """The projected embedding: transformers 5 returns it as the pooler output of an output object,
    earlier versions as a tensor."""
    return x if isinstance(x, torch.Tensor) else x.pooler_output


def clip_scores(
    clip_dir: str | Path,
    results: Mapping[Any, str],
    references: Mapping[Any, Sequence[str]],
    images: Mapping[Any, Path],
    batch: int = 32,
) -> dict[str, float]:
    """Mean CLIPScore and RefCLIPScore of ``results`` (image id -> caption) on ``images`` (id -> path)."""
    model, processor = load_clip(clip_dir)
    ids = list(results)
    missing = [i for i in ids if i not in images]
    if missing:
        raise InputError(f"CLIPScore needs the image of every result; no image file for ids {missing[:10]}")
    img = _images(model, processor, [images[i] for i in ids], batch)  # (N, D)
    cand = _texts(model, processor, [results[i] for i in ids], batch)  # (N, D)
    clip_s = W * (img * cand).sum(-1).clamp(min=0)  # (N,)
    refs = [r for i in ids for r in references[i]]
    owner = torch.tensor([n for n, i in enumerate(ids) for _ in references[i]])
    ref = _texts(model, processor, refs, batch)  # (R, D)
    cos = (cand[owner] * ref).sum(-1)  # (R,): each reference against its image's candidate
    best = torch.full((len(ids),), -1.0).scatter_reduce(0, owner, cos, reduce="amax").clamp(min=0)  # (N,)
    ref_clip = torch.where(clip_s + best > 0, 2 * clip_s * best / (clip_s + best).clamp(min=1e-12), 0.0)
    return {"CLIPScore": float(clip_s.mean()), "RefCLIPScore": float(ref_clip.mean())}
