"""Global-feature captioners: S0's CNN+GRU and the Show-and-Tell LSTM.

The pooled CNN feature initialises the hidden state and is also concatenated to every word
embedding (S0's design), so the decoder sees the image at each step, not only at the start.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .base import CaptionModel, State
from .encoders import build_cnn
from .registry import MODELS


class GlobalRNNCaptioner(CaptionModel):
    cell = "gru"

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__(vocab_size, cfg.blind)
        self.num_layers, self.hidden_dim = cfg.num_layers, cfg.hidden_dim
        self.encoder = build_cnn(cfg.encoder)
        feat = self.encoder.out_dim
        self.image_proj = nn.Sequential(nn.Linear(feat, cfg.embed_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
        n_init = cfg.num_layers * cfg.hidden_dim * (2 if self.cell == "lstm" else 1)
        self.init_hidden = nn.Linear(feat, n_init)
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=self.pad_id)
        rnn = nn.LSTM if self.cell == "lstm" else nn.GRU
        self.rnn = rnn(
            2 * cfg.embed_dim,
            cfg.hidden_dim,
            cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, vocab_size)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).mean((2, 3))  # (batch, feat): the global feature

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        """feats (B, C): the pooled CNN feature."""
        h = torch.tanh(self.init_hidden(feats)).view(feats.size(0), -1, self.num_layers, self.hidden_dim)
        state = State(image=self.image_proj(feats), h=h[:, 0])  # h: (batch, layers, hidden)
        if self.cell == "lstm":
            state["c"] = h[:, 1]
        return state

    def _hidden(self, state: State):
        h = state["h"].transpose(0, 1).contiguous()  # (layers, batch, hidden)
        return (h, state["c"].transpose(0, 1).contiguous()) if self.cell == "lstm" else h

    def _run(self, words: torch.Tensor, state: State) -> tuple[torch.Tensor, object]:
        x = torch.cat([self.embed(words), state["image"].unsqueeze(1).expand(-1, words.size(1), -1)], -1)
        out, hidden = self.rnn(x, self._hidden(state))  # out: (batch, T, hidden)
        return self.out(self.dropout(out)), hidden  # (batch, T, vocab)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, hidden = self._run(tokens.unsqueeze(1), state)
        new = State(state)
        if self.cell == "lstm":
            new["h"], new["c"] = hidden[0].transpose(0, 1), hidden[1].transpose(0, 1)
        else:
            new["h"] = hidden.transpose(0, 1)
        return torch.log_softmax(logits[:, 0].float(), -1), new

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        logits, _ = self._run(captions[:, :-1], self.expand_for(self.init_state_from_features(feats), captions))
        return logits  # (batch, T-1, vocab)


@MODELS.register("cnn_gru")
class CNNGRU(GlobalRNNCaptioner):
    """S0's baseline: CNN global feature + GRU."""

    cell = "gru"


@MODELS.register("show_tell")
class ShowTell(GlobalRNNCaptioner):
    """Show and Tell (Vinyals et al.): CNN global feature + LSTM."""

    cell = "lstm"
