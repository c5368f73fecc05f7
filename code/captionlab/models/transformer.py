"""ViT + Transformer decoder (S1's best model): causal self-attention over the caption so far,
cross-attention to the image's patch tokens (a ViT's, or a ResNet grid's).

Decoding is incremental: every layer's self-attention keys/values live in ``State`` as batch-first
tensors ``k{i}``/``v{i}`` (rows, heads, t, head_dim) that grow by one position per step, so a step
costs one token, and beam search reorders them with ``State.select`` like any other entry. The
cross-attention keys/values of the image are per image (``image_k{i}``/``image_v{i}``), computed once
in ``init_state`` and never copied across beams: a row's query meets its own image's keys through a
(images, heads, rows_per_image * T, head_dim) view. The last layer's cross-attention (mean over
heads) is the model's ``attention``, for heat-maps and the grounding rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..config_rules import position_problems
from ..errors import InputError
from .base import CaptionModel, State
from .encoders import image_encoder
from .registry import MODELS


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"model.hidden_dim ({dim}) must be divisible by model.num_heads ({heads})")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.o = nn.Linear(dim, dim)
        self.dropout = dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, heads, T, head_dim)."""
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, -1)
        return self.split(k), self.split(v)  # each (B, heads, T, head_dim)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, head_dim) -> (B, T, dim) through the output projection."""
        return self.o(x.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention, cross-attention, feed-forward, each with a residual. Without
    ``cross`` it is a GPT block (the text encoder of contrastive pre-training), whose weights a
    captioning decoder can start from (clip_gpt)."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float, cross: bool = True) -> None:
        super().__init__()
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim) if cross else None
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout) if cross else None
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, state: State, new: State, i: int, cached: bool, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (rows, T, dim). ``cached``: x continues the keys/values in ``state`` (T = 1 when stepping)."""
        sa, p = self.self_attn, self.dropout_p
        q = sa.split(sa.q(self.norm1(x)))  # (rows, heads, T, head_dim)
        k, v = sa.keys_values(self.norm1(x))
        if cached:
            k, v = torch.cat([state[f"k{i}"], k], 2), torch.cat([state[f"v{i}"], v], 2)  # (rows, heads, t+T, hd)
            new[f"k{i}"], new[f"v{i}"] = k, v
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=q.size(2) > 1)
        x = x + self.drop(sa.merge(a))
        weights = None
        if self.cross_attn is not None:
            a, weights = cross_attend(self.cross_attn, self.norm2(x), state, i, p, need_weights)
            x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm3(x))), weights

    @property
    def dropout_p(self) -> float:
        return self.self_attn.dropout if self.training else 0.0


def cross_attend(
    att: MultiHeadAttention, x: torch.Tensor, state: State, i: int, p: float, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows' queries x (rows, T, dim) against their image's keys (images, heads, N, head_dim).
    -> output (rows, T, dim) and, if asked, weights averaged over heads (rows, T, N)."""
    keys, values = state[f"image_k{i}"], state[f"image_v{i}"]
    mask = state.get("image_mask")  # (images, N) True where the memory is real, or None: all of it
    mask = mask[:, None, None] if mask is not None else None  # (images, 1, 1, N)
    rows, T = x.size(0), x.size(1)
    n_img, k = keys.size(0), rows // keys.size(0)
    q = att.split(att.q(x))  # (rows, heads, T, hd)
    q = q.view(n_img, k, att.heads, T, att.head_dim).transpose(1, 2).reshape(n_img, att.heads, k * T, att.head_dim)
    if need_weights:
        w = q @ keys.transpose(-1, -2) / math.sqrt(att.head_dim)  # (images, heads, k*T, N)
        w = (w if mask is None else w.masked_fill(~mask, -math.inf)).softmax(-1)
        out = w @ values
        weights = w.mean(1).view(n_img, k, T, -1).flatten(0, 1)  # (rows, T, N)
    else:
        out, weights = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p), None
    out = out.view(n_img, att.heads, k, T, att.head_dim).transpose(1, 2).reshape(rows, att.heads, T, att.head_dim)
    return att.merge(out), weights


def small_embeddings(embed: nn.Embedding, positions: nn.Embedding | None, dim: int) -> None:
    """Token (and learned position) embeddings at std dim^-0.5, as GPT-style models start them, so
    that tied output logits start near zero and positions do not drown the tokens."""
    nn.init.normal_(embed.weight, std=dim**-0.5)
    if positions is not None:
        nn.init.normal_(positions.weight, std=dim**-0.5)
    with torch.no_grad():
        embed.weight[CaptionModel.pad_id].zero_()


def sinusoid(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table  # (n, dim)


# What a Transformer decoder or text tower reads (grid_size: the region grid of a CNN encoder).
TRANSFORMER_KEYS = frozenset({"grid_size", "num_heads", "ff_dim", "positions", "max_positions", "tie_embeddings"})


class TokenPositions:
    """Token embeddings and learned or sinusoidal positions, shared by the captioning decoder and the
    pre-training text tower (same parameter names, so clip_gpt can start one from the other)."""

    def _init_tokens(self, cfg: ModelConfig, vocab_size: int, d: int) -> None:
        self.embed = nn.Embedding(vocab_size, d, padding_idx=CaptionModel.pad_id)
        self.max_positions = cfg.max_positions
        if cfg.positions == "learned":
            self.positions = nn.Embedding(cfg.max_positions, d)
        else:
            self.register_buffer("sinusoid", sinusoid(cfg.max_positions, d), persistent=False)
            self.positions = None

    @property
    def max_words(self) -> int | None:
        return self.max_positions  # a step at position t feeds token t: max_len steps need max_len positions

    def _position(self, start: int, length: int, device: torch.device) -> torch.Tensor:
        """Positions start .. start+length-1 -> (length, d)."""
        if start + length > self.max_positions:
            raise InputError(
                f"a caption of {start + length} tokens is longer than model.max_positions "
                f"({self.max_positions}): decode with a smaller max_len or cut captions (data.max_caption_len)"
            )
        idx = torch.arange(start, start + length, device=device)
        return self.positions(idx) if self.positions is not None else self.sinusoid[idx]  # (T, d)


@MODELS.register("vit_transformer")
class ViTTransformer(TokenPositions, CaptionModel):
    """ViT patch tokens (or a ResNet grid) -> Transformer decoder with a key/value cache."""

    config_keys = TRANSFORMER_KEYS

    @classmethod
    def config_problems(cls, cfg: Any) -> list[str]:
        return position_problems(cfg)

    def __init__(self, cfg: ModelConfig, vocab_size: int, feature_dim: int | None = None) -> None:
        super().__init__(vocab_size, cfg.blind)
        d = cfg.hidden_dim
        if feature_dim is None:
            self.encoder = image_encoder(cfg)
            feature_dim = self.encoder.out_dim
        self.memory = nn.Sequential(nn.Linear(feature_dim, d), nn.LayerNorm(d))
        self._init_tokens(cfg, vocab_size, d)
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.num_heads, cfg.ff_dim, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, vocab_size)
        if cfg.tie_embeddings:  # one matrix reads and writes words: start it at the scale of a linear layer
            small_embeddings(self.embed, self.positions, d)  # N(0, 1) rows would give logits of size sqrt(d)
            self.out.weight = self.embed.weight
        self.use_cache = True  # False recomputes the whole prefix at every step (benchmarks, tests)

    def memory_of(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the decoder cross-attends to (B, N, d), and which positions of it are real (B, N), or
        None where all are: the image's regions here; a model may add more (retrieved captions)."""
        return self.memory(feats), None

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        memory, mask = self.memory_of(feats)  # (B, N, d), (B, N) or None
        state = State() if mask is None else State(image_mask=mask)
        for i, layer in enumerate(self.layers):
            k, v = layer.cross_attn.keys_values(memory)  # (B, heads, N, hd), once per image
            state[f"image_k{i}"], state[f"image_v{i}"] = k, v
            empty = k[:, :, :0]  # (B, heads, 0, hd): the self-attention cache starts empty
            state[f"k{i}"], state[f"v{i}"] = empty, empty
        if not self.use_cache:
            state["prefix"] = torch.empty(feats.size(0), 0, dtype=torch.long, device=feats.device)
        return state

    def _decode(
        self, tokens: torch.Tensor, state: State, cached: bool, need_weights: bool = False, last_only: bool = False
    ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """tokens (rows, T) after what ``state`` holds -> logits (rows, T, vocab) (``last_only``: (rows, 1,
        vocab), all a decoding step needs), new state, last layer's cross-attention (rows, T, N) when asked."""
        start = state["k0"].size(2) if cached else 0
        x = self.dropout(self.embed(tokens) + self._position(start, tokens.size(1), tokens.device))  # (rows, T, d)
        new = State(state)
        weights = None
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, state, new, i, cached, need_weights and i == len(self.layers) - 1)
        x = x[:, -1:] if last_only else x  # a step without the cache reads only the newest position
        return self.head(self.norm(x), state), new, weights

    def head(self, h: torch.Tensor, state: State) -> torch.Tensor:
        """The last layer's normalised states (rows, T, d) -> next-token scores (rows, T, vocab)."""
        return self.out(h)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.use_cache:
            logits, new, weights = self._decode(tokens.unsqueeze(1), state, cached=True, need_weights=True)
        else:
            prefix = torch.cat([state["prefix"], tokens.unsqueeze(1)], 1)  # (rows, t+1): all of it again
            logits, new, weights = self._decode(prefix, state, cached=False, need_weights=True, last_only=True)
            new["prefix"] = prefix
        new["attention"] = self.shown_attention(weights[:, -1])  # (rows, regions)
        return torch.log_softmax(logits[:, -1].float(), -1), new

    def shown_attention(self, weights: torch.Tensor) -> torch.Tensor:
        """The last layer's cross-attention (rows, N) as heat-maps and the grounding rate read it."""
        return weights

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        state = self.expand_for(self.init_state_from_features(feats), captions)
        logits, _, _ = self._decode(captions[:, :-1], state, cached=False)
        return logits  # (B*n, T-1, vocab)
