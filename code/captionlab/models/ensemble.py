"""Several captioners decoded as one (S3's checkpoint ensembling): at every step the members'
next-word probabilities are averaged, inside the same greedy or beam search as a single model.

The ensemble is itself a ``CaptionModel``: its State holds each member's entries under
``<name>@<member>``, so ``State.select``/``expand`` reorder all members at once and the engine needs
no change. Members must share one vocabulary and one image normalisation (the captioner checks
the input size and the tokenizer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .base import CaptionModel, State


class Ensemble(CaptionModel):
    def __init__(self, members: Sequence[CaptionModel]) -> None:
        if not members:
            raise InputError("an ensemble needs at least one model")
        sizes = {m.vocab_size for m in members}
        if len(sizes) != 1:
            raise InputError(f"ensemble members have different vocabulary sizes: {sorted(sizes)}")
        norms = {m.image_norm for m in members}
        if len(norms) != 1:
            raise InputError(
                "ensemble members normalise images differently (mean, std): "
                f"{' vs '.join(str(n) for n in sorted(norms))}; every member must read the same input tensor"
            )
        super().__init__(members[0].vocab_size)
        self.members = nn.ModuleList(members)

    @property
    def image_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.members[0].image_norm  # one for all: checked above (CLIP's for ClipCap members)

    @property
    def max_words(self) -> int | None:
        limits = [m.max_words for m in self.members if m.max_words is not None]
        return min(limits) if limits else None

    def _split(self, state: State) -> list[State]:
        parts: list[dict] = [{} for _ in self.members]
        for key, value in state.items():
            name, _, i = key.rpartition("@")
            if name:
                parts[int(i)][name] = value
        return [State(p, per_image=state.per_image) for p in parts]

    def _join(self, states: Sequence[State]) -> State:
        out = State(per_image=states[0].per_image)
        for i, s in enumerate(states):
            out.update({f"{k}@{i}": v for k, v in s.items()})
        first = next((s for s in states if "attention" in s), None)  # plots show the first attending member
        if first is not None:
            out["attention"] = first["attention"]
            if "sentinel" in first:
                out["sentinel"] = first["sentinel"]
        return out

    def init_state(self, images: torch.Tensor) -> State:
        return self._join([m.init_state(images) for m in self.members])

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        outs = [m.step(tokens, s) for m, s in zip(self.members, self._split(state))]
        logprobs = torch.stack([lp.float() for lp, _ in outs])  # (members, rows, vocab)
        mean = torch.logsumexp(logprobs, 0) - math.log(len(outs))  # log of the mean probability
        return mean, self._join([s for _, s in outs])

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        return super().forward(images, captions)  # the generic stepping pass: ensembles are not trained
