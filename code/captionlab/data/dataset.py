"""The one in-memory dataset type every adapter produces, and the torch datasets built on it."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..progress import progress
from .images import BadImageError, check_image, load_image
from .tokenizers import Tokenizer
from .vocab import Vocabulary


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    split: str  # train | val | test | all
    captions: list[str]  # raw reference sentences
    objects: list[dict[str, Any]] = field(default_factory=list)  # {"name", "bbox": [x, y, w, h]} where known


@dataclass
class CaptionDataset:
    name: str
    records: list[ImageRecord]
    source: Path

    def split(self, name: str) -> list[ImageRecord]:
        recs = [r for r in self.records if r.split == name]
        if not recs:
            have = sorted({r.split for r in self.records})
            raise InputError(f"{self.source}: split {name!r} is empty; splits present: {have}")
        return recs

    def splits(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.split] = out.get(r.split, 0) + 1
        return out

    def references(self, split: str) -> dict[int, list[str]]:
        return {r.image_id: list(r.captions) for r in self.split(split)}

    def coco_annotations(self, split: str) -> dict[str, Any]:
        """COCO caption format, the one ``captionlab score`` reads."""
        recs = self.split(split)
        images = [{"id": r.image_id, "file_name": r.path.name, "file_path": str(r.path)} for r in recs]
        anns = [
            {"id": i, "image_id": r.image_id, "caption": c}
            for i, (r, c) in enumerate((r, c) for r in recs for c in r.captions)
        ]
        return {"images": images, "annotations": anns}


def check_images(records: list[ImageRecord], policy: str, source: Path) -> list[ImageRecord]:
    """Decode every image once up front so that a bad file fails (or is skipped) before training starts."""
    if policy not in ("error", "skip"):
        raise InputError(f"on_bad_image must be 'error' or 'skip', got {policy!r}")
    good, bad = [], []
    for r in progress(records, desc="checking images", unit="img", enabled=len(records) >= 2000):
        try:
            check_image(r.path)
            good.append(r)
        except BadImageError as e:
            if policy == "error":
                raise BadImageError(
                    f"{source}: image {r.image_id}: {e} "
                    "(use data.on_bad_image=skip / --on-bad-image skip to skip such images)"
                ) from None
            bad.append(r.path)
    if bad:
        shown = ", ".join(str(p) for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{source}: skipped {len(bad)} unreadable image(s): {shown}", stacklevel=2)
    return good


class CaptionGroups(Dataset):
    """One item per training image with ``seq_per_img`` of its captions, so the encoder runs once per
    image rather than once per caption. Which captions (when an image has more, or fewer and some
    repeat) is drawn from (seed, epoch, index): the same run gives the same batches, resumed or not."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        tokenizer: Tokenizer,
        transform,
        max_len: int,
        seq_per_img: int = 5,
        seed: int = 0,
    ) -> None:
        self.records = [r for r in records if r.captions]
        if not self.records:
            raise InputError("no training captions")
        self.transform = transform
        self.seq_per_img = seq_per_img
        self.seed = seed
        self.epoch = 0
        self.captions: list[list[list[int]]] = [
            [vocab.encode(tokenizer.tokenize(c), max_len) for c in r.captions] for r in self.records
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def pick(self, idx: int) -> list[list[int]]:
        caps = self.captions[idx]
        rng = random.Random(self.seed * 1_000_003 + self.epoch * 100_003 + idx)
        if len(caps) >= self.seq_per_img:
            return rng.sample(caps, self.seq_per_img)
        return caps + rng.choices(caps, k=self.seq_per_img - len(caps))

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        image = self.transform(load_image(self.records[idx].path))  # (3, H, W)
        return image, [torch.tensor(c, dtype=torch.long) for c in self.pick(idx)], idx


class ImageItems(Dataset):
    """One item per image, for decoding and evaluation."""

    def __init__(self, records: Sequence[ImageRecord], transform) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.records[idx].path)), idx


class FeatureItems(Dataset):
    """One item per image from cached encoder features (N, *feature_shape), in ``ImageItems``' order."""

    def __init__(self, features: Any) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        return feature_row(self.features, idx), idx


def feature_row(features: Any, idx: int) -> torch.Tensor:
    """Row ``idx`` of a (memory-mapped, float16) feature array as float32 (*feature_shape)."""
    return torch.from_numpy(np.asarray(features[idx], dtype=np.float32))


def collate_groups(
    batch: list[tuple[torch.Tensor, list[torch.Tensor], int]], pad_id: int = Vocabulary.pad_id
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> images (batch, 3, H, W), captions (batch * seq_per_img, T), record indices (batch,); the indices
    let a loss such as self-critical training look up each image's full reference set."""
    images = torch.stack([b[0] for b in batch])
    captions = torch.nn.utils.rnn.pad_sequence([c for b in batch for c in b[1]], batch_first=True, padding_value=pad_id)
    return images, captions, torch.tensor([b[2] for b in batch])


def collate_images(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])
