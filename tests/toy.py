"""A tiny hand-made captioner whose next-token distribution depends only on the last token and the
image: exact sequence probabilities are easy to enumerate, so decoders can be checked by brute force."""

from __future__ import annotations

import itertools

import torch

from captionlab.models.base import CaptionModel, State


class MarkovCaptioner(CaptionModel):
    """logprobs(next | last token, image) = log_softmax(table[image_kind, last]); images are (B, 1) kinds."""

    def __init__(self, vocab_size: int = 6, kinds: int = 4, seed: int = 0, attend: bool = False) -> None:
        super().__init__(vocab_size)
        g = torch.Generator().manual_seed(seed)
        table = torch.randn(kinds, vocab_size, vocab_size, generator=g) * 2.0
        table[:, :, self.pad_id] = -1e4  # never emit <pad> or <start>
        table[:, :, self.start_id] = -1e4
        self.register_buffer("table", table)
        self.attend = attend

    def init_state(self, images: torch.Tensor) -> State:
        kind = images.view(-1).long()
        state = State(kind=kind)
        if self.attend:
            state["attention"] = torch.zeros(kind.size(0), 3)
        return state

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits = self.table[state["kind"], tokens]  # (batch, vocab)
        new = State(state)
        if self.attend:  # a fake, token-dependent attention map to check bookkeeping
            new["attention"] = torch.stack([tokens.float(), state["kind"].float(), torch.ones_like(tokens).float()], 1)
        return torch.log_softmax(logits, -1), new

    def sequence_logprob(self, kind: int, tokens: list[int]) -> float:
        state, total, last = self.init_state(torch.tensor([[kind]])), 0.0, self.start_id
        for t in tokens:
            lp, state = self.step(torch.tensor([last]), state)
            total += float(lp[0, t])
            last = t
            if t == self.end_id:
                break
        return total


def best_by_enumeration(model: MarkovCaptioner, kind: int, max_len: int, alpha: float = 0.0) -> tuple[list[int], float]:
    """The most probable caption (ended by <end>, or cut at max_len) found by trying them all; <unk>,
    which the engine never chooses, is left out. With ``alpha``, ranked by log-probability over GNMT's
    length penalty ((5 + len) / 6) ** alpha, written out here rather than imported."""
    words = [w for w in range(model.vocab_size) if w not in (model.pad_id, model.start_id, model.unk_id)]
    best, best_lp = None, float("-inf")
    for n in range(1, max_len + 1):
        for seq in itertools.product(words, repeat=n):
            if model.end_id in seq[:-1] or (n < max_len and seq[-1] != model.end_id):
                continue
            lp = model.sequence_logprob(kind, list(seq)) / ((5 + n) / 6) ** alpha
            if lp > best_lp:
                best, best_lp = list(seq), lp
    return best, best_lp
