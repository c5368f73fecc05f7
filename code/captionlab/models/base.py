"""The one interface between captioning models and everything else (decoding, training, SCST, ensembles).

A model gives teacher-forced logits (``forward``) and a single decoding step (``init_state`` /
``step``). The decoding engine, trainers and evaluation are written once against this interface and
never look inside a model's state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..data.vocab import Vocabulary
from ..errors import InputError


class State(dict):
    """Decoder state: named tensors whose first dimension is the row (batch, or batch*beam).

    ``select`` reorders/expands every entry along that dimension, so beam search can grow and
    reorder beams without knowing what a model keeps. A model that attends stores the last
    step's weights under ``"attention"`` (rows, num_regions).

    Entries named ``image_*`` are per image, not per row: (images, ...), with ``per_image`` rows
    of each image adjacent. ``expand`` and any ``select`` that keeps rows inside their image leave
    them untouched, so beam search never copies region features (14x14x2048 per image at COCO
    size) at every step; a model reads them with ``rows_view``.
    """

    def __init__(self, *args, per_image: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        inherited = args[0].per_image if args and isinstance(args[0], State) else 1
        self.per_image: int = per_image if per_image is not None else inherited

    def select(self, index: torch.Tensor) -> State:
        k = self.per_image
        rows = {n: v.index_select(0, index) for n, v in self.items() if not n.startswith("image_")}
        if k == 1:
            return State(rows, **{n: v.index_select(0, index) for n, v in self.items() if n.startswith("image_")})
        own = torch.arange(index.numel(), device=index.device) // k
        if index.numel() == self.batch_size and torch.equal(index // k, own):  # beams stay with their image
            return State(rows, **{n: v for n, v in self.items() if n.startswith("image_")}, per_image=k)
        images = {n: v.index_select(0, index // k) for n, v in self.items() if n.startswith("image_")}
        return State(rows, **images, per_image=1)  # rows left their image: per-row copies

    def expand(self, n: int) -> State:
        """Repeat each row ``n`` times in place order: (a, b) -> (a, a, b, b) for n = 2."""
        if n == 1:
            return self
        index = torch.arange(self.batch_size, device=self._device).repeat_interleave(n)
        rows = {k: v.index_select(0, index) for k, v in self.items() if not k.startswith("image_")}
        return State(rows, **{k: v for k, v in self.items() if k.startswith("image_")}, per_image=self.per_image * n)

    def rows_view(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A per-row tensor (rows, ...) as (images, per_image, ...), to meet ``self[name]`` (images, ...)."""
        return x.view(self[name].size(0), self.per_image, *x.shape[1:])

    @property
    def _device(self) -> torch.device:
        return next(iter(self.values())).device

    @property
    def batch_size(self) -> int:
        """The number of rows."""
        for k, v in self.items():
            if not k.startswith("image_"):
                return v.size(0)
        return next(iter(self.values())).size(0) * self.per_image

    @property
    def attention(self) -> torch.Tensor | None:
        return self.get("attention")


def image_norm_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    encoder = model._modules.get("encoder")
    return getattr(encoder, "norm", None) or (IMAGENET_MEAN, IMAGENET_STD)


class CaptionModel(nn.Module):
    """Base class of every captioner; subclasses implement ``encode``, ``init_state``, ``step``, ``forward``."""

    pad_id, start_id, end_id, unk_id = Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.end_id, Vocabulary.unk_id

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    @property
    def image_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) images are normalised with: what the image encoder's weights were trained
        with (ImageNet's for ResNet and ViT, TF-Lite's for EfficientNet-Lite, CLIP's for ClipCap)."""
        return image_norm_of(self)

    @property
    def max_words(self) -> int | None:
        """The longest caption the model can decode, in steps (``<end>`` included): a Transformer has
        ``model.max_positions`` positions, GPT-2 its own less the prefix; None where nothing limits it (RNNs)."""
        return None

    def init_state(self, images: torch.Tensor) -> State:
        raise NotImplementedError

    @staticmethod
    def expand_for(state: State, captions: torch.Tensor) -> State:
        n, rem = divmod(captions.size(0), state.batch_size)
        if rem or n < 1:
            raise InputError(
                f"{captions.size(0)} captions for {state.batch_size} images: "
                "need the same number of captions for every image"
            )
        return state.expand(n)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens (batch,) -> log-probabilities (batch, vocab) of the next token, and the new state."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: captions (batch, T) starting with <start> -> scores (batch, T-1, vocab)
        predicting captions[:, 1:]: logits or log-probabilities (cross-entropy normalises either). This
        generic version runs ``step``; models override it with a faster whole-sequence pass that must
        agree with it.

        ``captions`` may hold ``n`` captions per image (batch*n rows, each image's captions adjacent):
        the image is then encoded once and its state shared, as ``expand_for`` does."""
        state = self.expand_for(self.init_state(images), captions)
        logits = []
        for t in range(captions.size(1) - 1):
            logprobs, state = self.step(captions[:, t], state)
            logits.append(logprobs)
        return torch.stack(logits, 1)


class FeatureInput(CaptionModel):
    """A captioner fed encoder features instead of images (cached features, decoder benchmarks):
    ``init_state``/``forward`` take what the model's ``encode`` would return. Same weights, no copy."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__(model.vocab_size)
        self.model = model

    @property
    def attention_maps(self) -> torch.Tensor | None:
        return getattr(self.model, "attention_maps", None)

    @property
    def max_words(self) -> int | None:
        return self.model.max_words

    def init_state(self, feats: torch.Tensor) -> State:
        return self.model.init_state_from_features(feats)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.model.step(tokens, state)

    def forward(self, feats: torch.Tensor, captions: torch.Tensor, **options: Any) -> Any:
        return self.model.forward_features(feats, captions, **options)
