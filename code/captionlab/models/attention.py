"""Grid-attention captioners: Show, Attend and Tell (Xu et al. 2015) and adaptive attention with a
visual sentinel ("Knowing when to look", Lu et al. 2017).

The CNN's feature map (ResNet or EfficientNet-Lite) is pooled to a ``grid_size`` x ``grid_size`` grid
of regions. Region features and their attention projection are computed once per image in
``init_state`` and kept per image (``image_*`` State entries): beam search reorders only the small
per-row state, never the regions.
Each step stores its attention weights under ``"attention"`` (rows, regions) and, for the adaptive
model, the sentinel weight under ``"sentinel"`` (rows,), so the one decoding engine returns them
with every word.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .base import CaptionModel, State
from .encoders import GridEncoder
from .registry import MODELS


class GridAttentionCaptioner(CaptionModel):
    """What both models share: the grid encoder, the embedding, the output layer, a teacher-forced
    pass that runs the same ``step`` (so forward and decoding cannot disagree), and feature entry
    points (``init_state_from_features``) for cached features and benchmarks."""

    doubly_stochastic = False

    def __init__(self, cfg: ModelConfig, vocab_size: int, feature_dim: int | None = None) -> None:
        super().__init__(vocab_size, cfg.blind)
        self.hidden_dim = cfg.hidden_dim
        if feature_dim is None:
            self.encoder = GridEncoder(cfg)
            feature_dim = self.encoder.out_dim
        self.feature_dim = feature_dim
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=self.pad_id)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, vocab_size)

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing from region features (B, regions, C): what training from a cache runs."""
        state = self.expand_for(self.init_state_from_features(feats), captions)
        logits, attn = [], []
        for t in range(captions.size(1) - 1):
            step_logits, state = self._step(captions[:, t], state)  # (B*n, vocab)
            logits.append(step_logits)
            attn.append(state["attention"])
        if self.doubly_stochastic:  # the loss adds Xu et al.'s term when the model reports its maps
            self.attention_maps = torch.stack(attn, 1)
        return torch.stack(logits, 1)  # (B*n, T-1, vocab)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self._step(tokens, state)
        return torch.log_softmax(logits.float(), -1), state

    def _step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError


# Elements of the (images, per_image, regions, A) tensor that additive attention works through per piece:
# 1M floats (4 MB) stay in the CPU's cache, where one tensor for the whole batch (128 MB at COCO size, beam
# 5, batch 64) would be a fresh allocation, page-faulted in at every step. On a GPU the batch goes at once.
CPU_PIECE = 1 << 20


def additive_scores(keys: torch.Tensor, query: torch.Tensor, score: nn.Linear, state: State) -> torch.Tensor:
    """Bahdanau attention scores w . tanh(keys + query) + b. keys (images, regions, A) per image; query
    (rows, A) -> (rows, regions).

    Written as (2w) . sigmoid(2 (keys + query)) + (b - sum w), the same function (tanh z = 2 sigmoid(2z) - 1):
    PyTorch's CPU sigmoid is about 4x faster than its tanh, and this tanh is the costliest elementwise work of
    attention beam search (images x beams x regions x A values per step)."""
    q = state.rows_view("image_keys", query).unsqueeze(2)  # (images, per_image, 1, A)
    w = 2 * score.weight.squeeze(0)  # (A,)
    b = score.bias - score.weight.sum()  # (1,)
    per_image = q.size(1) * keys.size(1) * keys.size(2)
    piece = max(1, CPU_PIECE // per_image) if keys.device.type == "cpu" else keys.size(0)
    e = []
    for i in range(0, keys.size(0), piece):
        z = torch.add(keys[i : i + piece].unsqueeze(1), q[i : i + piece])  # (piece, per_image, regions, A)
        e.append(torch.matmul(z.mul_(2).sigmoid_(), w) + b)  # in place: one such tensor; (piece, per_image, regions)
    return torch.cat(e).flatten(0, 1)  # (rows, regions)


def weighted_regions(alpha: torch.Tensor, state: State) -> torch.Tensor:
    """alpha (rows, regions) over image_feats (images, regions, C) -> context (rows, C)."""
    a = state.rows_view("image_feats", alpha)  # (images, per_image, regions)
    return torch.bmm(a, state["image_feats"]).flatten(0, 1)


@MODELS.register("show_attend_tell")
class ShowAttendTell(GridAttentionCaptioner):
    """Additive attention over regions at every step, a sigmoid gate (f_beta) on the context, an
    LSTM or GRU cell started from the mean region feature.

    ``model.region_dim`` first projects each region (Linear, ReLU, dropout), as ``att_embed`` does in
    self-critical.pytorch: the cell reads the context at every word, so a 1280-wide EfficientNet region
    makes its input 1280 wide (on `make demo`, 256 took an epoch from 63-74 s to 30-35 s; BENCHMARKS.md)."""

    doubly_stochastic = True
    config_keys = frozenset({"grid_size", "attention_dim", "cell", "region_dim"})

    def __init__(self, cfg: ModelConfig, vocab_size: int, feature_dim: int | None = None) -> None:
        super().__init__(cfg, vocab_size, feature_dim)
        self.region_embed = (
            nn.Sequential(nn.Linear(self.feature_dim, cfg.region_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
            if cfg.region_dim
            else None
        )
        d, h, a = cfg.region_dim or self.feature_dim, cfg.hidden_dim, cfg.attention_dim
        self.cell_type = cfg.cell
        self.enc_att = nn.Linear(d, a)
        self.dec_att = nn.Linear(h, a)
        self.att_score = nn.Linear(a, 1)
        self.f_beta = nn.Linear(h, d)
        self.init_h = nn.Linear(d, h)
        self.init_c = nn.Linear(d, h) if cfg.cell == "lstm" else None
        cell = nn.LSTMCell if cfg.cell == "lstm" else nn.GRUCell
        self.cell = cell(cfg.embed_dim + d, h)

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        if self.region_embed is not None:
            feats = self.region_embed(feats)  # (B, regions, C) -> (B, regions, region_dim)
        mean = feats.mean(1)  # (B, C)
        state = State(
            h=torch.tanh(self.init_h(mean)), image_feats=feats, image_keys=self.enc_att(feats)
        )  # keys projected once per image: (B, regions, A)
        if self.init_c is not None:
            state["c"] = torch.tanh(self.init_c(mean))
        return state

    def _step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = state["h"]  # (rows, H)
        alpha = additive_scores(state["image_keys"], self.dec_att(h), self.att_score, state).softmax(-1)
        context = torch.sigmoid(self.f_beta(h)) * weighted_regions(alpha, state)  # gated: (rows, C)
        x = torch.cat([self.embed(tokens), context], -1)
        new = State(state)
        if self.init_c is not None:
            new["h"], new["c"] = self.cell(x, (h, state["c"]))
        else:
            new["h"] = self.cell(x, h)
        new["attention"] = alpha
        return self.out(self.dropout(new["h"])), new


@MODELS.register("adaptive_attention")
class AdaptiveAttention(GridAttentionCaptioner):
    """The LSTM reads the word and the global image feature; a visual sentinel (gated memory cell)
    competes with the regions in one softmax, so for each word the model decides how much to look
    (1 - sentinel weight) and how much to rely on its language model. Output from context + h."""

    config_keys = frozenset({"grid_size", "attention_dim", "sentinel_bias", "sentinel_warmup_steps"})

    def __init__(self, cfg: ModelConfig, vocab_size: int, feature_dim: int | None = None) -> None:
        super().__init__(cfg, vocab_size, feature_dim)
        d, h, a = self.feature_dim, cfg.hidden_dim, cfg.attention_dim
        self.region_proj = nn.Sequential(nn.Linear(d, h), nn.ReLU())  # v_i
        self.global_proj = nn.Sequential(nn.Linear(d, cfg.embed_dim), nn.ReLU())  # v_g
        self.lstm = nn.LSTMCell(2 * cfg.embed_dim, h)
        self.gate_x = nn.Linear(2 * cfg.embed_dim, h)
        self.gate_h = nn.Linear(h, h)
        self.key_proj = nn.Linear(h, a)  # W_v
        self.query_proj = nn.Linear(h, a)  # W_g
        self.sentinel_proj = nn.Linear(h, a)  # W_s
        self.att_score = nn.Linear(a, 1)
        # The sentinel starts out unattractive (score offset -6: weight ~0.03 % against 9 regions). A
        # sentinel that wins early is taken for every word, the regions then get no gradient and the
        # model never learns to look (on the tiny config when it had a random ResNet-18, before the small
        # CNN: offset 0 -> grounding 0.00, CIDEr 1.32; -3 -> 0.42, 1.60; -6 -> 0.80, 2.31). Learned: it
        # grows where the language model serves better.
        self.sentinel_bias = nn.Parameter(torch.tensor(cfg.sentinel_bias))
        # The offset does not stop the sentinel's learned score from overtaking the regions later: on some
        # seeds (2 of 5 at demo scale) the model then relies on it for most words (mean weight 0.76 vs
        # 0.67), its attention never sharpens (peak region weight 0.09 vs 0.30) and CIDEr stays near 2.4.
        # So for the first ``sentinel_warmup_steps`` training batches the sentinel is out of the softmax
        # and every word must look; the batches seen are a buffer, so a resumed run holds it off exactly
        # as long. (Seed 3, demo config: val CIDEr-D 2.06 -> 4.09 at epoch 4.)
        self.sentinel_warmup = cfg.sentinel_warmup_steps
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.sentinel_held = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # checkpoints from before the warm-up have no counter; they are trained, so past any warm-up
        # (2**62, not the largest int64: training on from it must not wrap the count to negative)
        state_dict.setdefault(prefix + "batches_seen", torch.tensor(2**62))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        # reads the counter (a GPU sync) only while a warm-up is configured
        self.sentinel_held = (
            self.training and self.sentinel_warmup > 0 and int(self.batches_seen) < self.sentinel_warmup
        )
        if self.training:
            self.batches_seen += 1
        try:
            return super().forward_features(feats, captions)
        finally:
            self.sentinel_held = False

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        regions = self.region_proj(feats)  # (B, regions, H)
        zeros = regions.new_zeros(regions.size(0), self.hidden_dim)
        return State(
            h=zeros,
            c=zeros,
            v_g=self.global_proj(feats.mean(1)),
            image_feats=regions,
            image_keys=self.key_proj(regions),
        )

    def _step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = torch.cat([self.embed(tokens), state["v_g"]], -1)  # (rows, 2E)
        h, c = self.lstm(x, (state["h"], state["c"]))
        sentinel = torch.sigmoid(self.gate_x(x) + self.gate_h(state["h"])) * torch.tanh(c)  # s_t: (rows, H)
        query = self.query_proj(h)
        z = additive_scores(state["image_keys"], query, self.att_score, state)  # (rows, regions)
        z_s = self.att_score(torch.tanh(self.sentinel_proj(sentinel) + query)) + self.sentinel_bias  # (rows, 1)
        if self.sentinel_held:
            z_s = torch.full_like(z_s, float("-inf"))  # warm-up: weight 0, every word looks
        weights = torch.cat([z, z_s], -1).softmax(-1)  # regions and sentinel: (rows, regions + 1)
        alpha, beta = weights[:, :-1], weights[:, -1]
        context = weighted_regions(alpha, state) + beta.unsqueeze(1) * sentinel  # c_hat: (rows, H)
        new = State(state, h=h, c=c, attention=alpha, sentinel=beta)
        return self.out(self.dropout(context + h)), new
