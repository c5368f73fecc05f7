"""retrieval_transformer: a Transformer decoder given the captions of the image's nearest training
images as well as its regions (retrieval-augmented captioning, after SmallCap, Ramos et al. 2023).

SmallCap writes the retrieved captions into a prompt for GPT-2, which cross-attends to CLIP features.
Here the decoder is ``vit_transformer``'s and the retrieved captions join the image in the memory it
cross-attends to: the image's regions (projected as vit_transformer projects them) followed by every
token of the ``model.retrieval_k`` neighbours' captions, embedded with the decoder's own word
embedding (so attending to a retrieved word is close to writing it), a position within its caption
and the neighbour's rank. ``<pad>`` positions are masked out of the attention. With
``model.retrieval_copy`` the output is a pointer-generator head (See et al. 2017): a learnt gate mixes
the vocabulary softmax with a copy distribution over the retrieved words, so that a word a neighbour's
caption holds can be written before the decoder has learnt to produce it. On the Flickr8k subset it
made the model lean on its neighbours much more, and caption worse (docs/results.md), so it is off by
default.

Retrieval happens inside the model, once per image, in ``init_state_from_features``: the pooled
encoder feature against the datastore (``data/datastore.py``, buffers of this module, saved with the
weights), so decoding, SCST, ensembles, ``caption``, ``evaluate`` and ``serve`` drive it like any other
captioner and need nothing but its checkpoint. An image is never given its own captions (leave-one-out
by feature identity), at training and after. The encoder stays frozen: the datastore's keys are its
features, which fine-tuning would move away from.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..data.datastore import Datastore
from .base import State
from .registry import MODELS
from .transformer import ViTTransformer


@MODELS.register("retrieval_transformer")
class RetrievalTransformer(ViTTransformer):
    """``vit_transformer`` whose memory holds the retrieved captions after the image regions."""

    config_keys = ViTTransformer.config_keys | {"retrieval_k", "retrieval", "retrieval_copy"}
    uses_datastore = True

    @classmethod
    def config_problems(cls, cfg: Any) -> list[str]:
        out = super().config_problems(cfg)
        if cfg.model.encoder_trainable() or cfg.train.fine_tune_from_epoch is not None:
            out.append(
                "retrieval_transformer retrieves with its encoder's features, so the encoder stays frozen: "
                "model.encoder.pretrained=true and fine_tune=false (or model.encoder.frozen=true), "
                "no train.fine_tune_from_epoch"
            )
        return out

    def __init__(self, cfg: ModelConfig, vocab_size: int, feature_dim: int | None = None) -> None:
        super().__init__(cfg, vocab_size, feature_dim)
        d = cfg.hidden_dim
        self.k = cfg.retrieval_k
        self.random_neighbours = cfg.retrieval == "random"
        self.store = Datastore()
        self.rank = nn.Embedding(cfg.retrieval_k, d)  # which neighbour a retrieved word came from
        nn.init.normal_(self.rank.weight, std=d**-0.5)
        self.text_norm = nn.LayerNorm(d)
        self.copies = cfg.retrieval_copy
        if self.copies:
            self.copy_q, self.copy_k = nn.Linear(d, d), nn.Linear(d, d)  # the copy attention (see head)
            self.gate = nn.Linear(d, 1)  # how much of each next word is written rather than copied
        self.regions = 0  # image positions at the front of the memory (set per batch: heat-maps show those)

    def fill_datastore(self, features: torch.Tensor, captions: torch.Tensor) -> None:
        self.store.fill(features, captions)

    def retrieved(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, regions, C) -> the neighbours' captions (B, k, per_image, L), nearest first."""
        if not len(self.store):
            raise RuntimeError("retrieval_transformer has an empty datastore: the trainer fills it before training")
        rows = self.store.nearest(feats, self.k, exclude_same=True, random=self.random_neighbours)  # (B, k)
        return self.store.neighbour_captions(rows)

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        state = super().init_state_from_features(feats)
        if not self.copies:
            return state
        text, ids = self._text  # (B, M, d), (B, M): the retrieved words memory_of just embedded
        state["image_copy_k"], state["image_copy_ids"] = self.copy_k(text), ids
        return state

    def head(self, h: torch.Tensor, state: State) -> torch.Tensor:
        """A pointer-generator head (See et al. 2017): each next word is drawn from the vocabulary or
        copied from a retrieved caption, mixed by a learnt gate, so a word that a neighbour's caption
        holds can be written without the decoder having learnt to produce it. -> log-probabilities."""
        if not self.copies:
            return self.out(h)
        keys, ids = state["image_copy_k"], state["image_copy_ids"]  # (images, M, d), (images, M)
        rows, T, d = h.shape
        n_img = keys.size(0)
        q = self.copy_q(h).view(n_img, rows // n_img * T, d)  # a row meets its own image's words
        scores = (q @ keys.transpose(1, 2)).float() / d**0.5  # (images, rows/image * T, M)
        att = scores.masked_fill((ids == self.pad_id)[:, None], -math.inf).softmax(-1)
        copy = torch.zeros(n_img, att.size(1), self.vocab_size, device=h.device)
        copy = copy.scatter_add_(2, ids[:, None].expand_as(att), att).view(rows, T, -1)  # (rows, T, vocab)
        gate = self.gate(h).float()  # (rows, T, 1)
        written = F.logsigmoid(gate) + torch.log_softmax(self.out(h).float(), -1)
        return torch.logaddexp(written, F.logsigmoid(-gate) + copy.clamp_min(1e-30).log())

    def memory_of(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.memory(feats)  # (B, R, d)
        self.regions = image.size(1)
        caps = self.retrieved(feats)  # (B, k, c, L)
        B, k, c, L = caps.shape
        words = self.embed(caps) + self._position(0, L, caps.device)  # (B, k, c, L, d)
        words = words + self.rank.weight[:k, None, None]  # + (k, 1, 1, d)
        text = self.text_norm(words).view(B, k * c * L, -1)  # (B, M, d), M = k * c * L
        self._text = text, caps.view(B, -1)  # for the copy head's keys (init_state_from_features)
        real = torch.cat(
            [torch.ones(B, image.size(1), dtype=torch.bool, device=caps.device), (caps != 0).view(B, -1)], 1
        )
        return torch.cat([image, text], 1), real  # (B, R + M, d), (B, R + M)

    def shown_attention(self, weights: torch.Tensor) -> torch.Tensor:
        """(rows, R + M) -> the image's share (rows, R), renormalised: a heat-map is over regions."""
        image = weights[:, : self.regions]
        return image / image.sum(-1, keepdim=True).clamp_min(1e-12)
