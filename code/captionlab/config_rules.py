"""Rules that span several config keys, checked when a ``RunConfig`` is built: before any dataset is
loaded or synthesised and before anything is written (``train.val_max_len`` past the decoder's
positions used to fail after the first epoch). A model family adds its own rules as a
``config_problems(cfg)`` classmethod on its registered class; this module finds it through the
registry, so config needs no import of the models."""

from __future__ import annotations

from typing import Any

from .registry import registry_get


def problems(cfg: Any) -> list[str]:
    """Every cross-field problem of ``cfg`` (a RunConfig), each one line naming the keys."""
    t, m = cfg.train, cfg.model
    out: list[str] = []
    contrastive = (t.loss == "contrastive", t.select_metric == "mean_recall", m.name == "dual_encoder")
    if any(contrastive) and not all(contrastive):
        out.append(
            "contrastive pre-training goes with model.name=dual_encoder and train.select_metric=mean_recall "
            "(captionlab pretrain sets both), and only with them: "
            f"here train.loss={t.loss}, train.select_metric={t.select_metric}, model.name={m.name}"
        )
    if t.init_from:
        return out  # the model section comes from that checkpoint; checked again once it is read
    if t.fine_tune_from_epoch is not None and m.encoder_trainable():
        out.append(
            "train.fine_tune_from_epoch needs a frozen pretrained encoder (model.encoder.pretrained=true, "
            "model.encoder.fine_tune=false); this one trains from the start"
        )
    own = getattr(registry_get("model", m.name), "config_problems", None)
    if own is not None:
        out.extend(own(cfg))
    return out


def position_problems(cfg: Any, text_tower: bool = False) -> list[str]:
    """A Transformer decoder (or text tower): heads divide the width, and every caption it will be given
    or asked to write fits in ``model.max_positions``."""
    m, t, n = cfg.model, cfg.train, cfg.model.max_positions
    out = []
    if m.hidden_dim % m.num_heads:
        out.append(f"model.hidden_dim ({m.hidden_dim}) must be divisible by model.num_heads ({m.num_heads})")
    need = cfg.data.max_caption_len + (2 if text_tower else 1)  # <start> + words (+ <end> in the text tower)
    if need > n:
        out.append(
            f"data.max_caption_len ({cfg.data.max_caption_len}) needs {need} positions but model.max_positions "
            f"is {n}: raise model.max_positions or cut captions shorter"
        )
    if text_tower:
        return out  # it reads captions and writes none
    lengths = [("decode.max_len", cfg.decode.max_len), ("train.val_max_len", t.val_max_len)]
    if t.loss == "scst":
        lengths.append(("train.scst_max_len", t.scst_max_len))
    for key, value in lengths:
        if value > n:
            out.append(
                f"{key} ({value}) is longer than model.max_positions ({n}): the decoder has no positions past it"
            )
    return out
