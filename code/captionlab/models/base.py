"""The one interface between captioning models and everything else (decoding, training, SCST, ensembles).

A model gives teacher-forced logits (``forward``) and a single decoding step (``init_state`` /
``step``). The decoding engine, trainers and evaluation are written once against this interface and
never look inside a model's state.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.vocab import Vocabulary


class State(dict):
    """Decoder state: named tensors whose first dimension is the batch (or batch*beam).

    ``select`` reorders/expands every entry along that dimension, so beam search can grow and
    reorder beams without knowing what a model keeps. A model that attends stores the last
    step's weights under ``"attention"`` (batch, num_regions).
    """

    def select(self, index: torch.Tensor) -> "State":
        return State({k: v.index_select(0, index) for k, v in self.items()})

    def expand(self, n: int) -> "State":
        """Repeat each item ``n`` times in place order: (a, b) -> (a, a, b, b) for n = 2."""
        if n == 1:
            return self
        index = torch.arange(self.batch_size, device=next(iter(self.values())).device)
        return self.select(index.repeat_interleave(n))

    @property
    def batch_size(self) -> int:
        return next(iter(self.values())).size(0)

    @property
    def attention(self) -> torch.Tensor | None:
        return self.get("attention")


class CaptionModel(nn.Module):
    """Base class of every captioner; subclasses implement ``encode``, ``init_state``, ``step``, ``forward``."""

    pad_id, start_id, end_id = Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.end_id

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def init_state(self, images: torch.Tensor) -> State:
        raise NotImplementedError

    @staticmethod
    def expand_for(state: State, captions: torch.Tensor) -> State:
        n, rem = divmod(captions.size(0), state.batch_size)
        if rem or n < 1:
            raise ValueError(f"{captions.size(0)} captions for {state.batch_size} images: "
                             "need the same number of captions for every image")
        return state.expand(n)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens (batch,) -> log-probabilities (batch, vocab) of the next token, and the new state."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: captions (batch, T) starting with <start> -> scores (batch, T-1, vocab)
        predicting captions[:, 1:]: logits or log-probabilities (cross-entropy normalises either). This generic version runs ``step``; models override it with a
        faster whole-sequence pass that must agree with it.

        ``captions`` may hold ``n`` captions per image (batch*n rows, each image's captions adjacent):
        the image is then encoded once and its state shared, as ``expand_for`` does."""
        state = self.expand_for(self.init_state(images), captions)
        logits = []
        for t in range(captions.size(1) - 1):
            logprobs, state = self.step(captions[:, t], state)
            logits.append(logprobs)
        return torch.stack(logits, 1)
