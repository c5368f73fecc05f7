"""Contrastive image-text pre-training (CLIP-style, as S3 did on its contest's captions).

An image tower (any captionlab encoder: a ResNet grid or ViT patches, mean-pooled and projected) and
a text tower (a small causal Transformer over the dataset's own tokens, read at the <end> token, as
GPT-style text encoders are), trained with a symmetric InfoNCE loss and a learnable temperature
(``training/contrastive.py``). The text tower's blocks are ``DecoderLayer``s without cross-attention
and carry the same parameter names as ``vit_transformer``'s decoder, so ``clip_gpt`` starts its
captioning decoder from them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..config_rules import position_problems
from .base import CaptionModel, TrainableModel
from .encoders import image_encoder
from .registry import TOWERS
from .transformer import TRANSFORMER_KEYS, DecoderLayer, TokenPositions, small_embeddings


class TextTower(TokenPositions, nn.Module):
    """token ids (B, T) -> hidden states (B, T, d): embeddings, positions, causal GPT blocks, final norm."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self._init_tokens(cfg, vocab_size, d)
        small_embeddings(self.embed, self.positions, d)  # the scale clip_gpt's tied decoder expects
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.num_heads, cfg.ff_dim, cfg.dropout, cross=False) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embed(tokens) + self._position(0, tokens.size(1), tokens.device))  # (B, T, d)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, None, None, i, cached=False, need_weights=False)  # causal self-attention only
        return self.norm(x)


@TOWERS.register("dual_encoder")
class DualEncoder(TrainableModel):
    """images (B, 3, H, W), captions (B, T) -> unit image and text embeddings (B, D) and the logit scale."""

    config_keys = TRANSFORMER_KEYS - {"tie_embeddings"}  # its tower ties nothing; clip_gpt's decoder may

    @classmethod
    def config_problems(cls, cfg: Any) -> list[str]:
        return position_problems(cfg, text_tower=True)

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__(vocab_size, cfg.blind)
        self.encoder = image_encoder(cfg)
        self.text = TextTower(cfg, vocab_size)
        self.image_proj = nn.Linear(self.encoder.out_dim, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.hidden_dim, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature 0.07

    def image_embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, N, C) -> unit vectors (B, D)."""
        return F.normalize(self.image_proj(feats.mean(1)), dim=-1)

    def text_embedding(self, captions: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """<start> w1 .. wn <end> <pad>.. (B, T) -> unit vectors (B, D), read at <end>."""
        hidden = self.text(captions) if hidden is None else hidden  # (B, T, d)
        ends = (captions == CaptionModel.end_id).float().argmax(1)  # (B,): first <end> (T-1 if cut before it)
        ends = torch.where((captions == CaptionModel.end_id).any(1), ends, captions.size(1) - 1)
        return F.normalize(self.text_proj(hidden[torch.arange(captions.size(0)), ends.long()]), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()  # temperature >= 0.01, as CLIP clamps

    def forward(self, images: torch.Tensor, captions: torch.Tensor, lm: bool = False):
        return self.forward_features(self.encode(images), captions, lm)

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor, lm: bool = False):
        """(image, text, scale); with ``lm`` also next-word scores (B, T, V) through the tied embedding."""
        hidden = self.text(captions)  # (B, T, d)
        out = (self.image_embedding(feats), self.text_embedding(captions, hidden), self.scale())
        return (*out, hidden @ self.text.embed.weight.t()) if lm else out
