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
from PIL import Image
from torch.utils.data import Dataset

from ..errors import InputError
from ..progress import progress
from .images import BadImageError, check_header, load_image
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
    on_bad_image: str = "error"  # data.on_bad_image: what an image that fails when read does (skip | error)

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


def check_images(
    records: list[ImageRecord], policy: str, source: Path, splits: Sequence[str] | None = None
) -> list[ImageRecord]:
    """Check the images of ``splits`` (all where None) from their headers, so a missing or non-image file
    fails (or is skipped) before any work starts; the other splits' records are kept unchecked."""
    if policy not in ("error", "skip"):
        raise InputError(f"on_bad_image must be 'error' or 'skip', got {policy!r}")
    todo = [r for r in records if splits is None or r.split in splits]
    bad: set[int] = set()
    for r in progress(todo, desc="checking images", unit="img", enabled=len(todo) >= 20000):
        try:
            check_header(r.path)
        except BadImageError as e:
            if policy == "error":
                raise BadImageError(f"{source}: image {r.image_id}: {e} ({SKIP_HINT})") from None
            bad.add(id(r))
    if bad:
        paths = [str(r.path) for r in todo if id(r) in bad]
        shown = ", ".join(paths[:5]) + (" ..." if len(paths) > 5 else "")
        warnings.warn(f"{source}: skipped {len(paths)} unreadable image(s): {shown}", stacklevel=2)
    return [r for r in records if id(r) not in bad]


SKIP_HINT = "use data.on_bad_image=skip / --on-bad-image skip to skip such images"


def read_or_skip(path: Path, policy: str | None) -> Image.Image | None:
    """An image read while training or captioning: one that fails now (a truncated file passes the header
    check at load) is skipped with a warning naming it where ``policy`` is skip, else stops with one line
    (``None``: where nothing can be skipped, as in a feature cache that must hold every image)."""
    try:
        return load_image(path)
    except BadImageError as e:
        if policy != "skip":
            raise BadImageError(f"{e} ({SKIP_HINT})" if policy == "error" else str(e)) from None
        warnings.warn(f"skipped an unreadable image: {e}", stacklevel=2)
        return None


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
        on_bad_image: str = "error",
    ) -> None:
        self.records = [r for r in records if r.captions]
        self.on_bad_image = on_bad_image
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

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, list[torch.Tensor], int] | None:
        """None: an image that could not be read, skipped (``on_bad_image``); the collate drops it."""
        image = read_or_skip(self.records[idx].path, self.on_bad_image)
        if image is None:
            return None
        return self.transform(image), [torch.tensor(c, dtype=torch.long) for c in self.pick(idx)], idx  # (3, H, W)


class ImageItems(Dataset):
    """One item per image, for decoding and evaluation."""

    def __init__(self, records: Sequence[ImageRecord], transform, on_bad_image: str | None = None) -> None:
        self.records = list(records)
        self.transform = transform
        self.on_bad_image = on_bad_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int] | None:
        image = read_or_skip(self.records[idx].path, self.on_bad_image)
        return None if image is None else (self.transform(image), idx)


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
    batch = [b for b in batch if b is not None] or _all_skipped()  # images skipped (on_bad_image)
    images = torch.stack([b[0] for b in batch])
    captions = torch.nn.utils.rnn.pad_sequence([c for b in batch for c in b[1]], batch_first=True, padding_value=pad_id)
    return images, captions, torch.tensor([b[2] for b in batch])


def collate_images(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = [b for b in batch if b is not None] or _all_skipped()
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


def _all_skipped() -> list:
    raise BadImageError("every image of a batch was unreadable and skipped: check the image folder")
