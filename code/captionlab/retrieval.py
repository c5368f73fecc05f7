"""Retrieval. Image-text retrieval with a pre-training checkpoint (``load_dual_encoder``): unit embeddings of
images and captions, computed on the model's device, and what each caption finds. Pre-training's
validation and notebook 07 use the same functions, so they cannot disagree on how a caption is embedded.
And ``replace_datastore``: another captioned set for a retrieval_transformer to retrieve from."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from . import progress as P
from .captioner import Captioner
from .data.dataset import ImageItems, ImageRecord, collate_images
from .data.datastore import pad_captions, pooled
from .errors import InputError
from .metrics.retrieval import recall_at_k


@torch.no_grad()
def embed_images(
    dual: Captioner, records: Sequence[ImageRecord], batch_size: int = 64, num_workers: int = 0, progress: bool = False
) -> torch.Tensor:
    """records' images -> (N, D) unit vectors, on the model's device."""
    loader = DataLoader(
        ImageItems(records, dual.transform), batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers
    )
    out = []
    for batch, _ in P.progress(loader, desc="embedding images", unit="batch", enabled=progress):
        out.append(dual.model.image_embedding(dual.model.encode(batch.to(dual.device))))  # (B, D)
    return torch.cat(out)


@torch.no_grad()
def embed_captions(
    dual: Captioner, captions: Sequence[str], max_len: int | None = None, batch_size: int = 64
) -> torch.Tensor:
    """Captions (tokenised and cut to ``max_len`` words as in training) -> (M, D) unit vectors."""
    ids = [torch.tensor(dual.vocab.encode(dual.tokenizer.tokenize(c), max_len)) for c in captions]
    out = []
    for s in range(0, len(ids), batch_size):
        chunk = torch.nn.utils.rnn.pad_sequence(ids[s : s + batch_size], batch_first=True)  # (b, T), <pad> = 0
        out.append(dual.model.text_embedding(chunk.to(dual.device)))  # (b, D)
    return torch.cat(out)


def nearest_images(dual: Captioner, captions: Sequence[str], records: Sequence[ImageRecord]) -> list[int]:
    """For each caption, the index in ``records`` of the image most similar to it (text -> image)."""
    sim = embed_captions(dual, captions) @ embed_images(dual, records).t()  # (M, N)
    return sim.argmax(1).tolist()


def retrieval_recall(
    dual: Captioner,
    records: Sequence[ImageRecord],
    batch_size: int = 64,
    max_len: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Image->text and text->image recall@1/5/10 over ``records``, every reference caption counting."""
    images = embed_images(dual, records, batch_size, num_workers, progress)
    captions = [c for r in records for c in r.captions]
    owner = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])  # (M,): each caption's image
    return recall_at_k(images, embed_captions(dual, captions, max_len, batch_size), owner)


@torch.no_grad()
def replace_datastore(
    captioner: Captioner, records: Sequence[ImageRecord], batch_size: int = 64, progress: bool = False
) -> int:
    """Give a ``retrieval_transformer`` another captioned set to retrieve from, without retraining (a
    rebuilt dataset from ``rebuild-export``, a larger or more recent collection): its images are encoded
    by the model's own frozen encoder and its captions tokenised with the model's vocabulary (words it
    never learnt become ``<unk>``). Returns the number of images now in the datastore."""
    model = captioner.model
    if not model.uses_datastore:
        raise InputError(f"model {captioner.config.model.name} retrieves nothing: only retrieval_transformer does")
    records = [r for r in records if r.captions]
    loader = DataLoader(ImageItems(records, captioner.transform), batch_size=batch_size, collate_fn=collate_images)
    feats = [
        pooled(model.encode(x.to(captioner.device))) for x, _ in P.progress(loader, desc="datastore", enabled=progress)
    ]
    max_len = captioner.config.data.max_caption_len
    ids = [[captioner.vocab.encode(captioner.tokenizer.tokenize(c), max_len) for c in r.captions] for r in records]
    model.fill_datastore(torch.cat(feats), pad_captions(ids, max_len + 1))
    return len(records)
