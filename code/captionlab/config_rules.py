"""Rules that span several config keys, checked when a ``RunConfig`` is built: before any dataset is
loaded or synthesised and before anything is written (``train.val_max_len`` past the decoder's
positions used to fail after the first epoch). A model family adds its own rules as a
``config_problems(cfg)`` classmethod on its registered class; this module finds it through the
registry, so config needs no import of the models."""

from __future__ import annotations

import dataclasses
from typing import Any

from .registry import MODEL_KINDS, registry_get, registry_items, registry_names

# Keys that belong to some data formats, losses or settings only (a model family lists its own as
# ``config_keys``): set to anything but the default elsewhere, they are refused rather than ignored.
# (data.synthetic_* stay allowed everywhere: a run config for the synthetic set is routinely pointed at
# rebuilt Karpathy data with data.format=karpathy, as notebook 06 does.)
DATA_KEYS = dict.fromkeys(("test_fraction", "val_fraction", "split_seed"), ("deepfashion", "tsv"))
SCST_KEYS = (
    "scst_samples",
    "scst_baseline",
    "scst_temperature",
    "scst_reward",
    "scst_max_len",
    "scst_candidates",
    "scst_update",
)
TRAIN_KEYS = {  # key -> (what it needs, whether the config has it)
    **{k: ("train.loss=scst", lambda t: t.loss == "scst") for k in SCST_KEYS},
    "lm_weight": ("train.loss=contrastive", lambda t: t.loss == "contrastive"),
    "attention_reg": ("train.loss=xe", lambda t: t.loss == "xe"),
    "label_smoothing": ("train.loss=xe", lambda t: t.loss == "xe"),
    "lr_gamma": ("train.lr_schedule=step", lambda t: t.lr_schedule == "step"),
    "lr_step_epochs": ("train.lr_schedule=step", lambda t: t.lr_schedule == "step"),
    "fine_tune_blocks": ("train.fine_tune_from_epoch", lambda t: t.fine_tune_from_epoch is not None),
}


# What a model depends on in the data section: a train.init_from run must keep its checkpoint's values.
INIT_DATA_KEYS = ("image_size", "resize", "tokenizer", "max_caption_len", "synthetic_lang")


def problems(cfg: Any, merged: bool = False) -> list[str]:
    """Every cross-field problem of ``cfg`` (a RunConfig), each one line naming the keys. With
    ``train.init_from`` the model section is the checkpoint's, so the model's rules wait for ``merged``
    (``init_from_problems``, once the checkpoint's config is read)."""
    t, m = cfg.train, cfg.model
    out: list[str] = []
    contrastive = (t.loss == "contrastive", t.select_metric == "mean_recall", m.name == "dual_encoder")
    if any(contrastive) and not all(contrastive):
        out.append(
            "contrastive pre-training goes with model.name=dual_encoder and train.select_metric=mean_recall "
            "(captionlab pretrain sets both), and only with them: "
            f"here train.loss={t.loss}, train.select_metric={t.select_metric}, model.name={m.name}"
        )
    if t.loss == "scst" and t.scst_candidates == "beam" and t.scst_temperature != 1.0:
        out.append("train.scst_temperature shapes sampled candidates: beam ones (train.scst_candidates=beam) ignore it")
    if t.loss == "scst" and t.scst_update != "all" and t.fine_tune_from_epoch is not None:
        out.append(f"train.scst_update={t.scst_update} trains the output layer alone: drop train.fine_tune_from_epoch")
    if t.init_from and not merged:
        return out  # the model section comes from that checkpoint: init_from_problems checks the merge
    if t.fine_tune_from_epoch is not None and m.encoder_trainable():
        out.append(
            "train.fine_tune_from_epoch needs a frozen pretrained encoder (model.encoder.pretrained=true, "
            "model.encoder.fine_tune=false); this one trains from the start"
        )
    rewards = registry_names("reward")  # empty until training is imported: checked when the loss is built
    unknown = [n for n in (p.partition(":")[0] for p in t.scst_reward.split(",")) if rewards and n not in rewards]
    if t.loss == "scst" and unknown:
        out.append(f"train.scst_reward: unknown reward {unknown[0]!r}; known: {', '.join(rewards)}")
    family = registry_get(MODEL_KINDS, m.name)  # None: not registered yet (bare import)
    if family is not None:
        out.extend(family.config_problems(cfg))
    return out + scope_problems(cfg)


def _set(section: Any, key: str) -> bool:
    """Whether ``key`` of a config section differs from its default (the user set it)."""
    f = next(f for f in dataclasses.fields(section) if f.name == key)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return getattr(section, key) != default


def scope_problems(cfg: Any) -> list[str]:
    """Keys set where they do not apply (``data.test_fraction`` on Karpathy data, ``model.cell`` on
    adaptive attention, SCST's keys under cross-entropy), each one line saying where they do apply."""
    d, m, t = cfg.data, cfg.model, cfg.train
    out = [
        f"data.{k} does not apply to data.format={d.format} (only to {' and '.join(formats)})"
        for k, formats in DATA_KEYS.items()
        if d.format not in formats and _set(d, k) and not (k == "split_seed" and d.carve_test)
    ]
    families = {n: c.config_keys for n, c in registry_items(MODEL_KINDS).items()}
    own = families.get(m.name, frozenset())
    for key in sorted(set().union(*families.values()) - own) if families else []:
        if _set(m, key):
            users = sorted(n for n, keys in families.items() if key in keys)
            out.append(f"model.{key} does not apply to model.name={m.name} (only to {', '.join(users)})")
    out += [
        f"train.{k} does not apply here: it needs {need}"
        for k, (need, applies) in TRAIN_KEYS.items()
        if not applies(t) and _set(t, k)
    ]
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


def flat_config(section: Any, prefix: str = "") -> dict[str, Any]:
    """A config section (dataclass or dict) as ``{"encoder.name": ..., "hidden_dim": ...}``."""
    out: dict[str, Any] = {}
    for k, v in (section if isinstance(section, dict) else dataclasses.asdict(section)).items():
        out.update(flat_config(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def init_from_problems(cfg: Any, start: Any) -> list[str]:
    """``cfg`` starts from a checkpoint trained under ``start`` (its RunConfig): the run takes that
    model section, so what the model depends on in the data section must be the same, a ``model.*``
    set here would be dropped (refused instead), and the merged config must pass every rule."""
    d, path = cfg.data, cfg.train.init_from
    out = [
        f"data.{k} is {getattr(d, k)!r} here but {getattr(start.data, k)!r} in the train.init_from checkpoint "
        f"{path}, whose model was trained on that: set data.{k}={getattr(start.data, k)}"
        for k in INIT_DATA_KEYS
        if getattr(d, k) != getattr(start.data, k) and (k != "synthetic_lang" or d.format == "synthetic")
    ]
    mine, theirs, default = flat_config(cfg.model), flat_config(start.model), flat_config(type(cfg.model)())
    dropped = [k for k, v in mine.items() if v != default.get(k) and v != theirs.get(k)]
    if dropped:
        out.append(
            f"train.init_from takes the model section from {path}, so model.* cannot be set here: "
            + ", ".join(f"model.{k}={mine[k]} (the checkpoint's: {theirs.get(k)})" for k in dropped)
        )
    return out + problems(dataclasses.replace(cfg, model=start.model), merged=True)
