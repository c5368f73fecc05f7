"""Frozen-encoder feature cache: encode every training image once, train the decoder from the file.

While the CNN is frozen its output for an image never changes, yet running it is most of a training
step. The cache is a float16 ``.npy`` in ``train.cache_dir`` (``output/cache/``), read memory-mapped, with a
``.json`` beside it saying what made it (``captionlab cache`` lists them). Its name is a hash
of everything the features depend on — the model's encoding settings, every encoder weight, the
image transform, and each image's path, size and modification time — so it can never be stale: a
change in any of them names a different file, which is built (with a progress bar) on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import CaptionGroups, ImageItems, ImageRecord, collate_images, feature_row
from ..errors import InputError
from ..paths import resolve
from ..progress import progress as progress_bar


def cache_key(model: torch.nn.Module, model_cfg: Any, records: Sequence[ImageRecord], transform: Any) -> str:
    h = hashlib.sha256()
    enc = model_cfg.encoder
    # What makes the features (not the model's name): models that read the same encoder output share a cache
    made_by = [type(model).features.__qualname__, type(model.encoder).__name__]
    h.update(json.dumps([*made_by, enc.name, model_cfg.grid_size, model_cfg.blind]).encode())
    for name, tensor in sorted(model.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(transform).encode())
    for r in records:
        st = r.path.stat()
        h.update(f"{r.path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def build_or_open(
    model: torch.nn.Module,
    records: Sequence[ImageRecord],
    transform: Any,
    path: Path,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """The features of ``records`` in order, (N, *feature_shape) float16, memory-mapped; built first
    (atomically: written to a temporary file, then renamed) when ``path`` does not exist."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        loader = DataLoader(
            ImageItems(records, transform),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_images,
        )
        was_training = model.training
        model.eval()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        out = None
        try:
            for images, idx in progress_bar(loader, desc="caching encoder features", unit="batch", enabled=progress):
                feats = model.encode(images.to(device)).float().cpu().numpy()  # (batch, *feature_shape)
                if out is None:
                    out = np.lib.format.open_memmap(
                        tmp, mode="w+", dtype=np.float16, shape=(len(records), *feats.shape[1:])
                    )
                out[idx.numpy()] = feats.astype(np.float16)
            out.flush()
            del out
            describe(path, model, records, transform)
            os.replace(tmp, path)
        finally:
            model.train(was_training)
            if tmp.exists():
                tmp.unlink()
    return np.load(path, mmap_mode="r")


def cache_folder(cache_dir: str | None = None) -> Path:
    """``train.cache_dir``, else ``$CAPTIONLAB_CACHE_DIR``, else ``output/cache``."""
    return resolve(cache_dir or os.environ.get("CAPTIONLAB_CACHE_DIR") or "output/cache")


def describe(path: Path, model: torch.nn.Module, records: Sequence[ImageRecord], transform: Any) -> None:
    """``<cache>.json`` beside a cache: what made it, for ``captionlab cache`` (the name is only a hash)."""
    info = {
        "encoder": type(model.encoder).__name__,
        "features": type(model).features.__qualname__,
        "images": len(records),
        "first_image": str(records[0].path) if records else None,
        "transform": " ".join(repr(transform).split()),
        "made": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=1), encoding="utf-8")


def list_caches(folder: Path) -> list[tuple[Path, int, dict]]:
    """Every feature cache in ``folder``: its file, size in bytes and what made it (empty where unknown)."""
    out = []
    for npy in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
        meta = npy.with_suffix(".json")
        info = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
        out.append((npy, npy.stat().st_size, info))
    return out


class CachedGroups(Dataset):
    """The training ``CaptionGroups`` with cached encoder features in place of decoded images. It wraps
    the groups rather than copying them: which captions an item brings is theirs to draw, from the
    epoch the trainer sets on them, so the cache trains on the same captions as the images would."""

    def __init__(self, groups: CaptionGroups, features: np.ndarray) -> None:
        if len(features) != len(groups.records):
            raise InputError(f"feature cache holds {len(features)} images, the training split {len(groups.records)}")
        self.groups = groups
        self.features = features

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        return feature_row(self.features, idx), [torch.tensor(c, dtype=torch.long) for c in self.groups.pick(idx)], idx
