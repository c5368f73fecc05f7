"""One decoding engine for every model: greedy, sampling and batched beam search.

Written only against ``CaptionModel.init_state`` / ``step`` and ``State.select``. All images (and
all beams of all images) advance together in one tensor; there is no Python loop over images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import InputError
from .models.base import CaptionModel, State


@dataclass
class DecodeOutput:
    tokens: torch.Tensor  # (batch, T) ids without <start>, <end> kept, <pad> after it
    logprobs: torch.Tensor  # (batch, T) log-probability of each emitted token, 0 after <end>
    scores: torch.Tensor  # (batch,) ranking score: summed log-probability / length penalty
    attention: torch.Tensor | None = None  # (batch, T, regions) where the model attends
    sentinel: torch.Tensor | None = None  # (batch, T) adaptive attention: weight of the language model

    def traced(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in (("attention", self.attention), ("sentinel", self.sentinel)) if v is not None}

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens up to and including <end> (or all of them if it never came)."""
        return (self.tokens != CaptionModel.pad_id).sum(1)


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + len) / 6) ** alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


TRACED = ("attention", "sentinel")  # per-step State entries the engine returns with each token


def _no_pad_or_start(logprobs: torch.Tensor) -> torch.Tensor:
    """No live caption emits <pad> (it would end without <end>, a beam scored as if it had) or <start>,
    in any decoder; an untrained model's samples used to hold them mid-caption. (..., vocab)."""
    ids = torch.tensor([CaptionModel.pad_id, CaptionModel.start_id], device=logprobs.device)
    return logprobs.index_fill(-1, ids, float("-inf"))


def _mask_finished(logprobs: torch.Tensor, finished: torch.Tensor, pad_id: int) -> torch.Tensor:
    """A live beam never emits <pad> or <start>; a finished one can only emit <pad>, at no cost, so its
    score stays as it was."""
    logprobs = _no_pad_or_start(logprobs)
    if finished.any():
        logprobs = logprobs.masked_fill(finished.unsqueeze(1), float("-inf"))
        logprobs[finished, pad_id] = 0.0
    return logprobs


def _no_bad_end(logprobs: torch.Tensor, last: torch.Tensor, bad: torch.Tensor | None) -> torch.Tensor:
    """<end> is not allowed right after a word in ``bad`` (ruotianluo's ``remove_bad_endings``):
    self-critical training otherwise learns to stop mid-phrase ("a man sitting on a"), which CIDEr-D
    barely charges for. ``last``: (rows,) the token each row emitted last; ``bad``: ids, or None."""
    if bad is None or bad.numel() == 0:
        return logprobs
    hit = torch.isin(last, bad.to(last.device))  # (rows,)
    if not hit.any():
        return logprobs
    end = torch.zeros_like(logprobs, dtype=torch.bool)
    end[:, CaptionModel.end_id] = True
    return logprobs.masked_fill(end & hit.unsqueeze(1), float("-inf"))


def _sequential(
    model: CaptionModel,
    state: State,
    max_len: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    recorded: Callable[[torch.Tensor], torch.Tensor] | None = None,
    bad_endings: torch.Tensor | None = None,
) -> DecodeOutput:
    """One token at a time; ``recorded`` turns the model's log-probabilities into those kept for the
    chosen tokens (the model's own by default); ``bad_endings``: see ``_no_bad_end``."""
    batch = state.batch_size
    device = next(iter(state.values())).device
    tokens = torch.full((batch,), model.start_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    out_tokens, out_lp = [], []
    trace: dict[str, list[torch.Tensor]] = {k: [] for k in TRACED}
    for _ in range(max_len):
        logprobs, state = model.step(tokens, state)  # (batch, vocab)
        logprobs = _no_bad_end(_no_pad_or_start(logprobs), tokens, bad_endings)
        tokens = pick(logprobs).masked_fill(finished, model.pad_id)  # (batch,)
        out_tokens.append(tokens)
        kept = recorded(logprobs) if recorded is not None else logprobs  # (batch, vocab)
        out_lp.append(kept.gather(1, tokens.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0))
        for k in TRACED:
            if k in state:
                trace[k].append(state[k])
        finished = finished | (tokens == model.end_id)
        if finished.all():
            break
    lp = torch.stack(out_lp, 1)
    return DecodeOutput(
        torch.stack(out_tokens, 1), lp, lp.sum(1), **{k: torch.stack(v, 1) for k, v in trace.items() if v}
    )


def _no_unk(logprobs: torch.Tensor) -> torch.Tensor:
    """No decoder chooses <unk> (greedy, beam search, sampling): it matches no reference word
    (ruotianluo's ``suppress_UNK``). The log-probabilities of the words chosen stay the model's own."""
    return logprobs.index_fill(-1, logprobs.new_tensor([CaptionModel.unk_id], dtype=torch.long), float("-inf"))


def _argmax(logprobs: torch.Tensor) -> torch.Tensor:
    return _no_unk(logprobs).argmax(-1)


@torch.no_grad()
def greedy(
    model: CaptionModel,
    images: torch.Tensor,
    max_len: int = 20,
    state: State | None = None,
    bad_endings: torch.Tensor | None = None,
) -> DecodeOutput:
    start = state if state is not None else model.init_state(images)
    return _sequential(model, start, max_len, _argmax, bad_endings=bad_endings)


def sample(
    model: CaptionModel,
    images: torch.Tensor,
    max_len: int = 20,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    n: int = 1,
    state: State | None = None,
    sampled_logprobs: bool = False,
    bad_endings: torch.Tensor | None = None,
) -> DecodeOutput:
    """Draw ``n`` captions per image (rows image-major: (a, a, b, b) for n = 2), encoding each image once;
    ``state`` reuses an encoding already made. ``logprobs`` are the model's own (before temperature /
    top-k / top-p), or with ``sampled_logprobs`` those of the distribution drawn from (temperature,
    no <unk>; not with top-k / top-p), which a policy gradient needs to be unbiased; gradients flow
    through either, as self-critical training needs. ``bad_endings`` (see ``_no_bad_end``) is part of the
    distribution drawn from."""
    if sampled_logprobs and (top_k > 0 or top_p < 1.0):
        raise ValueError("sampled_logprobs covers temperature only, not top_k / top_p")

    def pick(lp: torch.Tensor) -> torch.Tensor:
        logits = _no_unk(lp.detach()) / max(temperature, 1e-6)
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.size(-1)), -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = logits.sort(-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)

    def tempered(lp: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(_no_unk(lp) / max(temperature, 1e-6), -1)  # (batch, vocab): what pick draws from

    start = (state if state is not None else model.init_state(images)).expand(n)
    return _sequential(model, start, max_len, pick, tempered if sampled_logprobs else None, bad_endings)


def sequence_logprobs(model: CaptionModel, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Teacher-forced log-probabilities (N, T) of captions ``tokens`` (N, T) as the engine returns them
    (no <start>, <pad> after <end>; N a multiple of the images) under the distribution the engine draws
    from at temperature 1 (no <unk>, <pad> or <start>), 0 at <pad>; with gradients, for a policy gradient
    on captions the engine chose without them (beam SCST)."""
    start = tokens.new_full((tokens.size(0), 1), model.start_id)
    scores = model(images, torch.cat([start, tokens], 1)).float()  # (N, T, vocab)
    lp = torch.log_softmax(_no_unk(_no_pad_or_start(scores)), -1)  # the rules every decoder draws under
    return lp.gather(2, tokens.unsqueeze(2)).squeeze(2).masked_fill(tokens == model.pad_id, 0.0)  # (N, T)


def check_n_best(n_best: int, beam_size: int) -> None:
    """Refuse, in one line, more best captions than the beam keeps (before any image is read)."""
    if not 1 <= n_best <= beam_size:
        raise InputError(f"--n-best {n_best} needs a beam at least as wide: the beam size is {beam_size} (--beam-size)")


@torch.no_grad()
def beam_search(
    model: CaptionModel,
    images: torch.Tensor,
    beam_size: int = 3,
    max_len: int = 20,
    alpha: float = 0.0,
    keep_greedy: bool = True,
    n_best: int = 1,
    bad_endings: torch.Tensor | None = None,
) -> DecodeOutput:
    """Batched beam search; returns the best of ``beam_size`` beams for every image (``n_best``: the
    best n of them, ranked, rows image-major (batch*n, T); the greedy row is then not a candidate).

    Finished beams stay in the beam and extend with <pad> at no cost, so they compete with live
    beams on summed log-probability; the final choice divides by ``length_penalty(len, alpha)``.
    Plain beam search can prune the greedy caption's prefix early (three likely openings beat
    "a" + its best next word) and then return a less probable caption than greedy. With
    ``keep_greedy`` every image also decodes its greedy caption, in one more row beside its beams
    (so each step is one model call), and keeps it as a candidate: the result never ranks below greedy.
    ``bad_endings``: see ``_no_bad_end``.
    """
    check_n_best(n_best, beam_size)
    state = model.init_state(images)
    batch, k = state.batch_size, beam_size
    greedy_row = keep_greedy and beam_size > 1 and n_best == 1
    width = k + greedy_row  # rows per image: its k beams, then its greedy caption
    device = images.device
    tokens = torch.full((batch,), model.start_id, dtype=torch.long, device=device)
    # every row of an image starts from <start> in the same state: the first step runs once per image
    logprobs, state = model.step(tokens, state)  # (batch, vocab)
    first = torch.arange(batch, device=device).repeat_interleave(width)
    logprobs, state = logprobs.index_select(0, first), state.expand(width)  # (batch*width, ...)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished = torch.zeros(batch * width, dtype=torch.bool, device=device)
    seq = torch.empty(batch * width, 0, dtype=torch.long, device=device)
    seq_lp = torch.empty(batch * width, 0, device=device)
    trace: dict[str, torch.Tensor] = {}
    offsets = (torch.arange(batch, device=device) * width).unsqueeze(1)  # (batch, 1): each image's first row
    for t in range(max_len):
        if t > 0:
            logprobs, state = model.step(tokens, state)  # (batch*width, vocab)
        allowed = _mask_finished(logprobs.float(), finished, model.pad_id)
        logprobs = _no_bad_end(_no_unk(allowed), tokens, bad_endings)  # tokens: (batch*width,) each row's last
        vocab = logprobs.size(1)
        rows = logprobs.view(batch, width, vocab)
        cand = (scores.unsqueeze(2) + rows[:, :k]).view(batch, k * vocab)
        scores, flat = cand.topk(k, dim=1)  # (batch, k)
        origin = offsets + torch.div(flat, vocab, rounding_mode="floor")  # (batch, k)
        tokens = flat % vocab
        if greedy_row:  # the greedy row follows its own argmax
            origin = torch.cat([origin, offsets + k], 1)  # (batch, width)
            tokens = torch.cat([tokens, rows[:, k].argmax(-1, keepdim=True)], 1)
        origin, tokens = origin.view(-1), tokens.view(-1)  # (batch*width,)
        state = state.select(origin)
        seq = torch.cat([seq[origin], tokens.unsqueeze(1)], 1)
        seq_lp = torch.cat([seq_lp[origin], logprobs[origin, tokens].unsqueeze(1)], 1)
        for name in TRACED:
            if name in state:
                now = state[name].unsqueeze(1)  # (batch*width, 1, ...)
                trace[name] = now if name not in trace else torch.cat([trace[name][origin], now], 1)
        finished = finished[origin] | (tokens == model.end_id)
        if finished.all():
            break
    beams = (offsets + torch.arange(k, device=device)).view(-1)  # (batch*k,) rows that are beams
    lengths = (seq[beams] != model.pad_id).sum(1).view(batch, k)
    ranked = scores / length_penalty(lengths, alpha)
    top, order = ranked.topk(n_best, dim=1)  # (batch, n)
    best = (offsets + order).view(-1)  # (batch*n,) image-major
    out = DecodeOutput(seq[best], seq_lp[best], top.reshape(-1), **{n: v[best] for n, v in trace.items()})
    if not greedy_row:
        return out
    g = offsets.squeeze(1) + k  # (batch,) the greedy rows
    greedy_out = DecodeOutput(seq[g], seq_lp[g], seq_lp[g].sum(1), **{n: v[g] for n, v in trace.items()})
    return _better(out, greedy_out, alpha, model.pad_id)


def _better(a: DecodeOutput, b: DecodeOutput, alpha: float, pad_id: int) -> DecodeOutput:
    """Per image, whichever of two decodings ranks higher (``b``'s scores are raw sums)."""
    b_rank = b.scores / length_penalty(b.lengths, alpha)
    take_b = b_rank > a.scores  # (batch,)
    if not take_b.any():
        return a
    width = max(a.tokens.size(1), b.tokens.size(1))

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.size(1)), value=value)

    def pick(x: torch.Tensor, y: torch.Tensor, value: float) -> torch.Tensor:
        x, y = pad(x, value), pad(y, value)
        return torch.where(take_b.view(-1, *[1] * (x.dim() - 1)), y, x)

    bt = b.traced()
    traced = {k: pick(v, bt[k], 0.0) if k in bt else v for k, v in a.traced().items()}
    return DecodeOutput(
        pick(a.tokens, b.tokens, pad_id),
        pick(a.logprobs, b.logprobs, 0.0),
        torch.where(take_b, b_rank, a.scores),
        **traced,
    )


def decode(
    model: CaptionModel,
    images: torch.Tensor,
    beam_size: int = 1,
    max_len: int = 20,
    alpha: float = 0.0,
    bad_endings: torch.Tensor | None = None,
) -> DecodeOutput:
    """Greedy for ``beam_size == 1``, beam search otherwise."""
    if beam_size < 1:
        raise InputError(f"beam_size must be >= 1, got {beam_size}")
    if beam_size == 1:
        return greedy(model, images, max_len, bad_endings=bad_endings)
    return beam_search(model, images, beam_size, max_len, alpha, bad_endings=bad_endings)
