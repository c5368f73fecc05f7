"""A trained captioner rebuilt from one checkpoint file: the object users caption images with."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import decoding
from .checkpoint import CheckpointError, read_checkpoint
from .config import RunConfig
from .data.images import build_transform, load_image, to_rgb
from .data.lm_vocab import load_vocab
from .data.tokenizers import build_tokenizer
from .data.vocab import Vocabulary
from .errors import InputError
from .models import TOWERS, CaptionModel, build_model
from .models.base import FeatureInput


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class CaptionTrace:
    """A caption with where the model looked for each word (attention models)."""

    caption: str
    words: list[str]
    attention: torch.Tensor | None  # (words, grid, grid): weights of the step that emitted each word
    sentinel: torch.Tensor | None  # (words,) adaptive attention: how much the word relied on the language model


class Captioner:
    def __init__(
        self, model: CaptionModel, vocab: Vocabulary, config: RunConfig, device: torch.device | str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.config = config
        self.tokenizer = build_tokenizer(config.data.tokenizer)
        mean, std = model.image_norm  # what the encoder's weights expect
        self.transform = build_transform(config.data.image_size, config.data.resize, mean, std)
        self.bad_endings = self._bad_end_ids(config.decode.bad_endings)

    def _bad_end_ids(self, words: Sequence[str]) -> torch.Tensor | None:
        """decode.bad_endings as vocabulary ids (words the vocabulary lacks are never emitted anyway)."""
        if not words:
            return None
        if not isinstance(self.vocab, Vocabulary):
            raise InputError(
                f"decode.bad_endings lists words, and this {self.config.model.name} model writes GPT-2 pieces: "
                "leave it empty"
            )
        return torch.tensor([self.vocab.stoi[w] for w in words if w in self.vocab.stoi], dtype=torch.long)

    def batch(self, images: Sequence[Image.Image | str | os.PathLike]) -> torch.Tensor:
        """PIL images and/or paths -> the model's input (N, 3, H, W), already on its device: the one way
        a notebook or script hands images to ``model`` or ``decoding`` on a GPU as on a CPU."""
        pil = [to_rgb(x) if isinstance(x, Image.Image) else load_image(x) for x in images]
        return torch.stack([self.transform(im) for im in pil]).to(self.device)

    def words(self, tokens: torch.Tensor) -> list[str]:
        """Token ids (batch, T) -> caption strings."""
        return [self.tokenizer.detokenize(self.vocab.decode(row.tolist())) for row in tokens]

    @property
    def max_words(self) -> int | None:
        """The longest caption this model can decode (None: no limit); see ``CaptionModel.max_words``."""
        return self.model.max_words

    def check_max_len(self, max_len: int) -> int:
        """Refuse, in one line, a caption length the model has no positions for (before any decoding)."""
        if self.max_words is not None and max_len > self.max_words:
            raise InputError(
                f"max_len {max_len} is longer than this {self.config.model.name} model can write: at most "
                f"{self.max_words} words"
            )
        return max_len

    def check_n_best(self, n: int, beam_size: int | None = None) -> None:
        """Refuse, in one line, more best captions than the beam keeps (before any image is read)."""
        decoding.check_n_best(n, beam_size or self.config.decode.beam_size)

    def _beam(self, beam_size: int | None, max_len: int | None) -> tuple[int, int, float]:
        d = self.config.decode
        return (beam_size or d.beam_size, self.check_max_len(max_len or d.max_len), d.length_penalty)

    @torch.no_grad()
    def caption_tensor(
        self, images: torch.Tensor, beam_size: int | None = None, max_len: int | None = None, features: bool = False
    ) -> decoding.DecodeOutput:
        """Decode a batch of transformed images, or (``features``) of what the model's ``encode`` returns."""
        k, n, alpha = self._beam(beam_size, max_len)
        model = FeatureInput(self.model) if features else self.model
        return decoding.decode(model, images.to(self.device), k, n, alpha, self.bad_endings)

    @torch.no_grad()
    def decode(
        self,
        images: Sequence[Image.Image] | torch.Tensor,
        beam_size: int | None = None,
        max_len: int | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> decoding.DecodeOutput:
        """One batch of PIL images (or of images already through ``transform``, stacked) through the
        engine: beam search (greedy at beam 1) or sampling."""
        batch = images if isinstance(images, torch.Tensor) else self.batch(images)  # (batch, 3, H, W)
        if sample:
            _, n, _ = self._beam(1, max_len)
            return decoding.sample(
                self.model, batch.to(self.device), n, temperature=temperature, top_p=top_p, bad_endings=self.bad_endings
            )
        return self.caption_tensor(batch, beam_size, max_len)

    def caption(
        self,
        images: Iterable[Image.Image | str | os.PathLike] | Image.Image | str | os.PathLike,
        beam_size: int | None = None,
        max_len: int | None = None,
        batch_size: int = 32,
        with_attention: bool | None = False,
    ) -> list[str] | list[CaptionTrace]:
        """Captions for PIL images and/or image paths, in order; with ``with_attention``, a
        ``CaptionTrace`` per image (the model must attend: show_attend_tell, adaptive_attention);
        ``None``: traces where the model attends, captions where it does not."""
        if isinstance(images, (Image.Image, str, os.PathLike)):
            images = [images]
        items: Sequence = list(images)
        out: list = []
        for i in range(0, len(items), batch_size):
            pil = [x if isinstance(x, Image.Image) else load_image(x) for x in items[i : i + batch_size]]
            decoded = self.decode(pil, beam_size, max_len)
            traced = with_attention or (with_attention is None and decoded.attention is not None)
            out.extend(self.traces(decoded) if traced else self.words(decoded.tokens))
        return out

    @torch.no_grad()
    def n_best(
        self, images: Sequence[Image.Image], n: int, beam_size: int | None = None, max_len: int | None = None
    ) -> list[list[tuple[str, float]]]:
        """The ``n`` best beams of every image, ranked: (caption, score) where the score is the summed
        log-probability divided by the length penalty (``decode.length_penalty``)."""
        k, steps, alpha = self._beam(beam_size, max_len)
        self.check_n_best(n, k)
        decoded = decoding.beam_search(
            self.model, self.batch(images), k, steps, alpha, n_best=n, bad_endings=self.bad_endings
        )
        words, scores = self.words(decoded.tokens), decoded.scores.tolist()
        return [list(zip(words[i : i + n], scores[i : i + n])) for i in range(0, len(words), n)]

    def traces(self, decoded: decoding.DecodeOutput) -> list[CaptionTrace]:
        if decoded.attention is None:
            raise InputError(
                f"model {self.config.model.name} has no attention to show; attention maps come from "
                "show_attend_tell and adaptive_attention"
            )
        out = []
        for i, row in enumerate(decoded.tokens):
            words = self.vocab.decode(row.tolist())
            att = decoded.attention[i, : len(words)].float().cpu()  # (words, regions)
            grid = math.isqrt(att.size(1))
            sentinel = decoded.sentinel[i, : len(words)].float().cpu() if decoded.sentinel is not None else None
            square = att.view(-1, grid, grid) if grid * grid == att.size(1) else None  # a grid of regions, or not
            out.append(CaptionTrace(self.tokenizer.detokenize(words), words, square, sentinel))
        return out


def read_model(path: str | Path) -> tuple[CaptionModel, Vocabulary, RunConfig]:
    """Model (with its weights), vocabulary and run config of a checkpoint."""
    return model_from(read_checkpoint(path))


def model_from(ckpt: dict) -> tuple[CaptionModel, Vocabulary, RunConfig]:
    """``read_model`` of a checkpoint already read; the encoder is built without pretrained weights,
    which the checkpoint holds."""
    cfg = RunConfig.from_dict(ckpt["config"])
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.encoder.pretrained = False
    model_cfg.pretrained_from = None  # clip_gpt: its weights are in the checkpoint now
    vocab = load_vocab(ckpt["vocab"])
    model = build_model(model_cfg, len(vocab), vocab=vocab, assets=ckpt.get("assets"))
    model.load_state_dict(ckpt["model"])
    return model, vocab, cfg


def read_kind(path: str | Path, towers: bool) -> dict:
    """The checkpoint at ``path`` where it holds the kind asked for (a captioner, or with ``towers`` a
    ``captionlab pretrain`` dual encoder), else one line saying what it is and what it is good for."""
    ckpt = read_checkpoint(path)
    name = ckpt["config"]["model"]["name"]
    if name in TOWERS and not towers:  # registered apart from the captioners: nothing that decodes picks it up
        raise CheckpointError(
            f"{path} is a {name} checkpoint (`captionlab pretrain`: image and text towers for "
            f"retrieval), not a captioner: start a captioner from it with model.name=clip_gpt "
            f"model.pretrained_from={path}, or use it for image-text retrieval (captionlab.metrics.retrieval)"
        )
    if name not in TOWERS and towers:
        raise CheckpointError(f"{path} is a {name} captioner, not a pre-training checkpoint: use load_checkpoint")
    return ckpt


def read_captioner_model(path: str | Path) -> tuple[CaptionModel, Vocabulary, RunConfig]:
    """``read_model`` for what decodes: refuses a pre-training checkpoint, which is no captioner."""
    return model_from(read_kind(path, towers=False))


def load_dual_encoder(path: str | Path, device: str | torch.device = "auto") -> Captioner:
    """A ``captionlab pretrain`` checkpoint for retrieval: its towers (``.model``), input transform,
    vocabulary and tokenizer. It writes no captions; ``load_checkpoint`` refuses it."""
    model, vocab, cfg = model_from(read_kind(path, towers=True))
    return Captioner(model, vocab, cfg, pick_device(str(device)))


def load_checkpoint(path: str | Path | Sequence[str | Path], device: str | torch.device = "auto") -> Captioner:
    """Everything needed to caption comes from the file: config, vocabulary and weights. The encoder
    is rebuilt without pretrained weights (they are in the checkpoint), so no download is needed.

    Several paths give one captioner that decodes them as an ensemble (averaged next-word
    probabilities); they must share a vocabulary, a tokenizer, an input size and an image normalisation."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if len(paths) == 1:
        model, vocab, cfg = read_captioner_model(paths[0])
        return Captioner(model, vocab, cfg, pick_device(str(device)))
    from .models.ensemble import Ensemble

    loaded = [read_captioner_model(p) for p in paths]
    _, vocab, cfg = loaded[0]
    for p, (_, v, c) in zip(paths[1:], loaded[1:]):
        if v != vocab:
            raise InputError(
                f"cannot ensemble {paths[0]} and {p}: their vocabularies differ "
                f"({len(vocab)} vs {len(v)} tokens{'' if len(v) != len(vocab) else ', same size, other words'}); "
                "ensemble checkpoints trained on the same data and tokenizer"
            )
        if (c.data.image_size, c.data.resize) != (cfg.data.image_size, cfg.data.resize):
            raise InputError(
                f"cannot ensemble {paths[0]} and {p}: input sizes differ ({cfg.data.image_size} vs {c.data.image_size})"
            )
        if c.data.tokenizer != cfg.data.tokenizer:
            raise InputError(
                f"cannot ensemble {paths[0]} and {p}: their tokenizers differ "
                f"({cfg.data.tokenizer} vs {c.data.tokenizer}), so their captions are written differently"
            )
    names = "+".join(c.model.name for _, _, c in loaded)
    cfg = copy.deepcopy(cfg)
    cfg.model.name = names  # shown in reports; the ensemble is never rebuilt from this config
    return Captioner(Ensemble([m for m, _, _ in loaded]), vocab, cfg, pick_device(str(device)))
