"""ClipCap (Mokady et al. 2021; S4): a frozen CLIP image embedding, a mapper to ``prefix_len``
embeddings of the language model, and GPT-2 continuing from that prefix.

Two recipes, as in the paper: an MLP mapper with GPT-2 fine-tuned, or a transformer mapper with
GPT-2 frozen (``model.lm_frozen``), where only the mapper trains. The LM's own tokenizer carries the
text (``LMVocabulary``: LM ids shifted past captionlab's four special ids), and decoding runs
through the shared engine with the LM's key/value cache held in ``State`` as plain tensors
(``hf.cache_to_state``). The first step feeds the LM's begin token after the prefix, in training
and decoding alike.

Where no CLIP weights can be had, ``model.pretrained_from`` (in place of ``model.clip``) names a
``captionlab pretrain`` checkpoint: its image tower (``model.encoder`` and ``model.grid_size`` must be
the tower's) and projection stand in for CLIP's image embedding, frozen as CLIP is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..data.lm_vocab import LMVocabulary, from_lm_logits
from ..errors import InputError
from .base import CaptionModel, State
from .encoders import StagedEncoder, image_encoder
from .hf import cache_to_state, load_pretrained, state_to_cache
from .registry import MODELS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPEncoder(StagedEncoder):
    """CLIPVisionModel, frozen: images (B, 3, H, W) -> pooled embedding (B, C). Frozen, its output can
    come from the feature cache (train.feature_cache), which makes a ClipCap epoch cheap."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip
        self.norm = (CLIP_MEAN, CLIP_STD)  # what CLIP's weights expect
        self.out_dim: int = clip.config.hidden_size
        self.set_trainable(False)

    def stages(self, last: int) -> list[nn.Module]:
        return list(self.clip.vision_model.encoder.layers)[-last:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resize = images.size(-1) != self.clip.config.image_size
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.clip(pixel_values=images, interpolate_pos_encoding=resize).pooler_output  # (B, C)


class MLPMapper(nn.Module):
    def __init__(self, clip_dim: int, lm_dim: int, prefix_len: int) -> None:
        super().__init__()
        self.prefix_len, self.lm_dim = prefix_len, lm_dim
        hidden = lm_dim * prefix_len // 2
        self.net = nn.Sequential(nn.Linear(clip_dim, hidden), nn.Tanh(), nn.Linear(hidden, lm_dim * prefix_len))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.size(0), self.prefix_len, self.lm_dim)  # (B, P, D)


class TransformerMapper(nn.Module):
    """The CLIP embedding becomes ``prefix_len`` tokens; with as many learned constants, a transformer
    encoder reads them and the constants' outputs are the prefix (ClipCap's TransformerMapper)."""

    def __init__(self, clip_dim: int, lm_dim: int, prefix_len: int, layers: int, heads: int) -> None:
        super().__init__()
        self.prefix_len, self.lm_dim = prefix_len, lm_dim
        self.proj = nn.Linear(clip_dim, lm_dim * prefix_len)
        self.const = nn.Parameter(torch.randn(prefix_len, lm_dim))
        layer = nn.TransformerEncoderLayer(lm_dim, heads, 2 * lm_dim, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).view(x.size(0), self.prefix_len, self.lm_dim)  # (B, P, D)
        x = torch.cat([x, self.const.expand(x.size(0), -1, -1)], 1)  # (B, 2P, D)
        return self.transformer(x)[:, self.prefix_len :]  # (B, P, D)


@MODELS.register("clipcap")
class ClipCap(CaptionModel):
    uses_lm_vocab = True  # its vocabulary is the language model's tokenizer (trainer.build_vocab)
    config_keys = frozenset(
        {
            "clip",
            "lm",
            "prefix_len",
            "mapper",
            "mapper_layers",
            "lm_frozen",
            "num_heads",
            "pretrained_from",
            "grid_size",
        }
    )

    @classmethod
    def config_problems(cls, cfg: Any) -> list[str]:
        m = cfg.model
        if bool(m.clip) == bool(m.pretrained_from):
            return [
                "clipcap reads images through model.clip (a CLIP directory) or model.pretrained_from (a "
                f"captionlab pretrain checkpoint's image tower): set one, not {'both' if m.clip else 'neither'}"
            ]
        return []

    def __init__(
        self, cfg: ModelConfig, vocab_size: int, vocab: LMVocabulary | None = None, assets: dict[str, Any] | None = None
    ) -> None:
        super().__init__(vocab_size, cfg.blind)
        from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2LMHeadModel

        if not isinstance(vocab, LMVocabulary) or len(vocab) != vocab_size:
            raise InputError("clipcap needs the vocabulary of its language model's tokenizer (LMVocabulary)")
        if assets:  # from a checkpoint: the architectures it saved; its weights follow
            clip = (
                CLIPVisionModel(CLIPVisionConfig.from_dict(assets["clip_config"])) if "clip_config" in assets else None
            )
            lm = GPT2LMHeadModel(GPT2Config.from_dict(assets["lm_config"]))
        else:
            clip = load_pretrained(CLIPVisionModel, cfg.clip, "model.clip") if cfg.clip else None
            lm = load_pretrained(GPT2LMHeadModel, cfg.lm, "model.lm")
        if lm.get_input_embeddings().num_embeddings < vocab.lm_size:
            raise InputError(
                f"model.lm: its tokenizer has {vocab.lm_size} tokens but the model embeds only "
                f"{lm.get_input_embeddings().num_embeddings}"
            )
        self.tower_proj: nn.Linear | None = None
        if clip is not None:
            self.encoder: nn.Module = CLIPEncoder(clip)
            c = self.encoder.out_dim
        else:  # a captionlab pretrain image tower (load_pretrained fills it): grid, mean-pooled, projected
            self.encoder = image_encoder(cfg)
            self.encoder.set_trainable(False)
            self.tower_proj = nn.Linear(self.encoder.out_dim, cfg.embed_dim).requires_grad_(False)
            c = cfg.embed_dim
        self.lm = lm
        self.lm_layers: int = lm.config.n_layer
        self.lm_eos, self.lm_bos, self.banned = vocab.lm_eos, vocab.lm_bos, vocab.banned
        self.text = vocab
        d = lm.config.n_embd
        self.mapper = (
            MLPMapper(c, d, cfg.prefix_len)
            if cfg.mapper == "mlp"
            else TransformerMapper(c, d, cfg.prefix_len, cfg.mapper_layers, cfg.num_heads)
        )
        if cfg.lm_frozen:
            for p in lm.parameters():
                p.requires_grad_(False)

    @property
    def max_words(self) -> int | None:
        return self.lm.config.n_positions - self.mapper.prefix_len  # the prefix takes the first positions

    @classmethod
    def text_vocab(cls, cfg: ModelConfig, tokenizer: str) -> LMVocabulary:
        """The language model's own tokenizer, from ``model.lm``; ``tokenizer`` names the data's words."""
        return LMVocabulary.from_dir(cfg.lm, tokenizer)

    def assets(self) -> dict[str, Any]:
        """What a checkpoint needs besides the weights to rebuild this model with no directory."""
        clip = {"clip_config": self.encoder.clip.config.to_dict()} if self.tower_proj is None else {}
        return {**clip, "lm_config": self.lm.config.to_dict()}

    def load_pretrained(self, ckpt: dict, cfg: ModelConfig) -> None:
        """The image tower and projection of a ``captionlab pretrain`` checkpoint (``model.pretrained_from``)."""
        theirs = ckpt["config"]["model"]
        for key, ours in (("encoder", cfg.encoder.name), ("grid_size", cfg.grid_size), ("embed_dim", cfg.embed_dim)):
            value = theirs[key]["name"] if key == "encoder" else theirs[key]
            if value != ours:
                raise InputError(f"model.{key}{'.name' * (key == 'encoder')} = {ours!r} but the pre-trained "
                                 f"image tower has {value!r}")  # fmt: skip
        state = {k: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
        state |= {
            "tower_proj." + k[len("image_proj.") :]: v for k, v in ckpt["model"].items() if k.startswith("image_proj.")
        }
        missing = [
            k
            for k in self.load_state_dict(state, strict=False).missing_keys
            if k.startswith(("encoder.", "tower_proj."))
        ]
        if missing:
            raise InputError(f"model.pretrained_from: the image tower lacks {missing[:5]}")

    def clip_embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """The encoder's output -> the image embedding the mapper reads (B, C): CLIP's pooled output as
        is; a pre-trained tower's grid (B, N, C') mean-pooled, projected and unit-length, as it pre-trained."""
        if self.tower_proj is None:
            return feats
        return F.normalize(self.tower_proj(feats.mean(1)), dim=-1)  # (B, embed_dim)

    def output_layer(self) -> nn.Module:
        return self.lm.get_output_embeddings()  # GPT-2's lm_head (tied to its input embeddings)

    def _vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return from_lm_logits(logits[..., : self.text.lm_size], self.lm_eos, self.banned)

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        prefix = self.mapper(self.clip_embedding(feats))  # (B, P, D)
        out = self.lm(inputs_embeds=prefix, use_cache=True)
        return State(cache_to_state(out.cache))  # lm_k{i}, lm_v{i}: (B, heads, P, head_dim)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        emb = self.lm.get_input_embeddings()(self.text.lm_ids(tokens)).unsqueeze(1)  # (rows, 1, D)
        out = self.lm(inputs_embeds=emb, cache=state_to_cache(state, self.lm_layers), use_cache=True)
        logits = self._vocab_logits(out.logits[:, -1])  # (rows, vocab)
        return torch.log_softmax(logits.float(), -1), State(state, **cache_to_state(out.cache))

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        prefix = self.mapper(self.clip_embedding(feats))  # (B, P, D)
        prefix = prefix.repeat_interleave(captions.size(0) // feats.size(0), 0)  # (B*n, P, D)
        words = self.lm.get_input_embeddings()(self.text.lm_ids(captions[:, :-1]))  # (B*n, T-1, D)
        logits = self.lm(inputs_embeds=torch.cat([prefix, words], 1)).logits  # (B*n, P+T-1, V_lm)
        return self._vocab_logits(logits[:, prefix.size(1) :])  # (B*n, T-1, vocab)
