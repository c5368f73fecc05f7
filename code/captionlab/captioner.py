"""A trained captioner rebuilt from one checkpoint file: the object users caption images with."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from PIL import Image

from . import decoding
from .config import RunConfig
from .data.images import build_transform, load_image, to_rgb
from .data.tokenizers import build_tokenizer
from .data.vocab import Vocabulary
from .models import CaptionModel, build_model
from .checkpoint import read_checkpoint


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Captioner:
    def __init__(self, model: CaptionModel, vocab: Vocabulary, config: RunConfig,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.config = config
        self.tokenizer = build_tokenizer(config.data.tokenizer)
        self.transform = build_transform(config.data.image_size, config.data.resize)

    def words(self, tokens: torch.Tensor) -> list[str]:
        """Token ids (batch, T) -> caption strings."""
        return [self.tokenizer.detokenize(self.vocab.decode(row.tolist())) for row in tokens]

    def _beam(self, beam_size: int | None, max_len: int | None) -> tuple[int, int, float]:
        d = self.config.decode
        return (beam_size or d.beam_size, max_len or d.max_len, d.length_penalty)

    @torch.no_grad()
    def caption_tensor(self, images: torch.Tensor, beam_size: int | None = None,
                       max_len: int | None = None) -> decoding.DecodeOutput:
        k, n, alpha = self._beam(beam_size, max_len)
        return decoding.decode(self.model, images.to(self.device), k, n, alpha)

    def caption(self, images: Iterable[Image.Image | str | os.PathLike] | Image.Image | str | os.PathLike,
                beam_size: int | None = None, max_len: int | None = None, batch_size: int = 32) -> list[str]:
        """Captions for PIL images and/or image paths, in order."""
        if isinstance(images, (Image.Image, str, os.PathLike)):
            images = [images]
        items: Sequence = list(images)
        out: list[str] = []
        for i in range(0, len(items), batch_size):
            pil = [to_rgb(x) if isinstance(x, Image.Image) else load_image(x) for x in items[i:i + batch_size]]
            batch = torch.stack([self.transform(im) for im in pil])  # (batch, 3, H, W)
            out.extend(self.words(self.caption_tensor(batch, beam_size, max_len).tokens))
        return out


def load_checkpoint(path: str | Path, device: str | torch.device = "auto") -> Captioner:
    """Everything needed to caption comes from the file: config, vocabulary and weights. The encoder
    is rebuilt without pretrained weights (they are in the checkpoint), so no download is needed."""
    ckpt = read_checkpoint(path)
    cfg = RunConfig.from_dict(ckpt["config"])
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.encoder.pretrained = False
    vocab = Vocabulary(ckpt["vocab"])
    model = build_model(model_cfg, len(vocab))
    model.load_state_dict(ckpt["model"])
    return Captioner(model, vocab, cfg, pick_device(str(device)))
