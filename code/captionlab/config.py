"""Run configuration as dataclasses: loaded from YAML, overridden by ``key=value``, saved in checkpoints."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml


@dataclass
class DataConfig:
    format: str = "synthetic"  # synthetic | karpathy | deepfashion | folder
    path: str = "dataset/synthetic"
    image_root: str | None = None  # defaults to the annotation file's folder
    tokenizer: str = "en_word"
    min_freq: int = 1
    max_caption_len: int = 30  # training captions are cut to this many words
    image_size: int = 224  # square side fed to the encoder
    resize: int | None = None  # shorter side before the centre crop; None = image_size
    on_bad_image: str = "error"  # error | skip
    split_seed: int = 0  # deepfashion's seeded split
    test_fraction: float = 0.2
    val_fraction: float = 0.05  # taken from the training part when the source has no val split
    num_workers: int = 0
    synthetic_n: int = 5000  # format synthetic: generated into `path` when absent
    synthetic_seed: int = 0
    synthetic_size: int = 128


@dataclass
class EncoderConfig:
    name: str = "resnet101"  # resnet18 | resnet34 | resnet50 | resnet101 | resnet152
    pretrained: bool = True
    weights: str | None = None  # local state_dict file; else torchvision's cache
    fine_tune: bool = False  # train the CNN too (always true when pretrained is false)


@dataclass
class ModelConfig:
    name: str = "cnn_gru"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.3
    blind: bool = False  # ablation: zero the image features, so only the language prior is learned


@dataclass
class TrainConfig:
    run_name: str = "cnn_gru"
    output_dir: str = "output/model_ckpt"
    epochs: int = 10
    batch_size: int = 32  # images per batch; each brings seq_per_img captions
    seq_per_img: int = 5
    lr: float = 4e-4
    encoder_lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    lr_schedule: str = "step"  # constant | step | cosine
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    warmup_steps: int = 0
    select_metric: str = "CIDEr"  # which val metric picks best.pt
    val_beam_size: int = 1
    val_max_len: int = 20
    val_batch_size: int = 64
    seed: int = 0
    amp: bool = False  # mixed precision, CUDA only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tensorboard: bool = True
    log_every: int = 50


@dataclass
class DecodeConfig:
    beam_size: int = 3
    max_len: int = 20
    length_penalty: float = 0.0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _build(cls, d, "")


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"config section {prefix or '<root>'!r} must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            known = ", ".join(fields)
            raise ValueError(f"unknown config key {prefix + key!r}; known keys here: {known}")
        ftype = fields[key].type
        sub = _dataclass_type(ftype)
        kwargs[key] = _build(sub, value, f"{prefix}{key}.") if sub else value
    return cls(**kwargs)


def _dataclass_type(ftype: Any) -> type | None:
    name = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", "")
    return _SECTIONS.get(name)


_SECTIONS = {c.__name__: c for c in (DataConfig, EncoderConfig, ModelConfig, TrainConfig, DecodeConfig)}


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``train.epochs=3 model.encoder.name=resnet18``: values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return d


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML: {e}") from None
    return RunConfig.from_dict(apply_overrides(d, overrides))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
