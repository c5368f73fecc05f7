"""Run configuration as typed dataclasses: loaded from YAML, overridden by ``key=value``, saved in checkpoints.

Every value is checked against its declared type and range when the config is built, before any
data is loaded or any file written, so ``train.epochs=abc`` fails at once with one line that names
the key, the value and what is expected (``ConfigError``), never deep inside training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_fields import ConfigError, build, opt
from .config_rules import problems
from .errors import MissingError
from .files import atomic_write_text
from .metric_keys import SELECT_METRICS
from .registry import MODEL_KINDS


@dataclass
class DataConfig:
    format: str = opt("synthetic", registry="dataset format", help="synthetic | karpathy | deepfashion | tsv | folder")
    path: str = "dataset/synthetic"
    image_root: str | None = None  # defaults to the annotation file's folder
    tokenizer: str = opt("en_word", registry="tokenizer", help="en_word | zh_char | zh_jieba")
    min_freq: int = opt(1, min=1)
    max_caption_len: int = opt(30, min=1, help="training captions are cut to this many words")
    image_size: int = opt(224, min=16, help="square side fed to the encoder")
    resize: int | None = opt(None, min=16, help="shorter side before the centre crop; None = image_size")
    on_bad_image: str = opt("error", choices=("error", "skip"))
    split_seed: int = opt(0, min=0, help="the seeded splits: deepfashion's, tsv's and data.carve_test's")
    test_fraction: float = opt(0.2, min=0.0, below=1.0)
    val_fraction: float = opt(
        0.05, min=0.0, below=1.0, help="deepfashion and tsv: the share of train (after the test split) held out as val"
    )
    carve_test: int = opt(
        0, min=0, help="a source with no test split: this many training images become a seeded test split"
    )
    num_workers: int = opt(0, min=0)
    synthetic_n: int = opt(5000, min=3, help="format synthetic: images generated into `path` when absent")
    synthetic_seed: int = opt(0, min=0)
    synthetic_size: int = opt(128, min=16)
    synthetic_lang: str = opt("en", choices=("en", "zh"), help="language of the synthetic captions")


@dataclass
class EncoderConfig:
    name: str = opt("resnet101", registry="encoder")  # models/encoders.py registers them
    pretrained: bool = True
    weights: str | None = None  # local state_dict file; else the installed package, torch.hub's cache, a download
    fine_tune: bool = False  # train the CNN too (always true when pretrained is false, unless frozen)
    frozen: bool = False  # keep even random weights fixed: the random-features control of benchmarks/real_photos.py
    image_size: int = opt(
        224, min=16, help="ViT encoders: the side their position grid is built for (other input sizes are interpolated)"
    )

    def __post_init__(self) -> None:
        if self.frozen and self.fine_tune:
            raise ConfigError("model.encoder.frozen and model.encoder.fine_tune are both true: choose one")

    def trainable(self, pretrained: bool | None = None) -> bool:
        """Trained weights stay frozen unless ``fine_tune``; random ones train unless ``frozen``."""
        return not self.frozen and (self.fine_tune or not (self.pretrained if pretrained is None else pretrained))


@dataclass
class ModelConfig:
    name: str = opt("cnn_gru", registry=MODEL_KINDS)  # a captioner, or the dual encoder
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embed_dim: int = opt(256, min=1)
    hidden_dim: int = opt(512, min=1)
    num_layers: int = opt(1, min=1)
    dropout: float = opt(0.3, min=0.0, below=1.0)
    grid_size: int = opt(7, min=1, help="attention models: regions = grid_size x grid_size")
    attention_dim: int = opt(512, min=1)
    region_dim: int = opt(
        0, min=0, help="show_attend_tell: project each region to this width first (0: keep the encoder's)"
    )
    cell: str = opt("lstm", choices=("lstm", "gru"), help="show_attend_tell's recurrent cell")
    sentinel_bias: float = opt(-6.0, help="adaptive_attention: initial score offset of the visual sentinel")
    sentinel_warmup_steps: int = opt(
        0, min=0, help="adaptive_attention: training batches during which the sentinel is held off (0: never)"
    )
    blind: bool = False  # ablation: zero the image features, so only the language prior is learned
    # Transformer decoder (vit_transformer) and ClipCap's transformer mapper
    num_heads: int = opt(8, min=1)
    ff_dim: int = opt(2048, min=1, help="feed-forward width of the transformer decoder")
    positions: str = opt("learned", choices=("learned", "sinusoidal"))
    max_positions: int = opt(64, min=2, help="longest caption (in tokens) the decoder has positions for")
    tie_embeddings: bool = False  # share the input embedding with the output layer
    # ClipCap: CLIP vision model + mapper + GPT-2, each from a local Hugging Face directory
    clip: str | None = None
    lm: str | None = None
    prefix_len: int = opt(10, min=1, help="clipcap: prefix embeddings the mapper gives the language model")
    mapper: str = opt("mlp", choices=("mlp", "transformer"))
    mapper_layers: int = opt(8, min=1)
    lm_frozen: bool = False  # clipcap: train only the mapper (S4's transformer-mapper recipe)
    pretrained_from: str | None = None  # clip_gpt: the `captionlab pretrain` checkpoint it starts from
    pretrained_towers: str = opt(
        "both", choices=("both", "image", "text"), help="clip_gpt: which pre-trained towers it starts from"
    )
    retrieval_k: int = opt(4, min=1, help="retrieval_transformer: training images whose captions each image is given")
    retrieval_copy: bool = False  # retrieval_transformer: a pointer-generator head that copies retrieved words
    retrieval: str = opt(
        "nearest",
        choices=("nearest", "random"),
        help="retrieval_transformer: the nearest images' captions, or (a control) those of unrelated images",
    )

    def image_tower_pretrained(self) -> bool:
        """The encoder starts from trained weights: ImageNet's, or (clip_gpt) the pre-trained image tower."""
        return self.encoder.pretrained or (bool(self.pretrained_from) and self.pretrained_towers != "text")

    def encoder_trainable(self) -> bool:
        return self.encoder.trainable(self.image_tower_pretrained())


_REWARD = r"\w+(:\d+(\.\d*)?)?"  # the names are the reward registry's (config_rules checks them)
REWARD_PATTERN = rf"{_REWARD}(,{_REWARD})*"
# What `captionlab pretrain` means, as overrides in front of the user's (notebook 07 uses them too).
PRETRAIN = ["model.name=dual_encoder", "train.loss=contrastive", "train.select_metric=mean_recall"]


@dataclass
class TrainConfig:
    run_name: str = opt("cnn_gru", pattern=r"[A-Za-z0-9_.\-]+", help="a folder name under output_dir")
    output_dir: str = "output/model_ckpt"
    epochs: int = opt(10, min=1)
    batch_size: int = opt(32, min=1, help="images per batch; each brings seq_per_img captions")
    seq_per_img: int = opt(5, min=1)
    lr: float = opt(4e-4, above=0.0)
    encoder_lr: float = opt(1e-4, min=0.0)
    weight_decay: float = opt(0.0, min=0.0)
    grad_clip: float = opt(5.0, min=0.0, help="0 disables clipping")
    lr_schedule: str = opt("step", choices=("constant", "step", "cosine"))
    lr_step_epochs: int = opt(5, min=1)
    lr_gamma: float = opt(0.5, above=0.0, max=1.0)
    warmup_steps: int = opt(0, min=0)
    select_metric: str = opt("CIDEr", choices=SELECT_METRICS, help="which val metric picks best.pt")
    val_beam_size: int = opt(1, min=1)
    val_max_len: int = opt(20, min=1)
    val_batch_size: int = opt(64, min=1)
    seed: int = opt(0, min=0)
    amp: bool = False  # mixed precision, CUDA only
    device: str = opt("auto", pattern=r"auto|cpu|cuda(:\d+)?|mps", help="auto | cpu | cuda | cuda:N")
    tensorboard: bool = True
    log_every: int = opt(50, min=1)
    save_every_steps: int = opt(
        0,
        min=0,
        help="also write last.pt every N optimizer steps, for an exact mid-epoch resume (0: at epoch ends only)",
    )
    max_bad_steps: int = opt(5, min=1, help="stop after this many non-finite losses in a row (each is skipped)")
    fine_tune_from_epoch: int | None = opt(
        None,
        min=1,
        help="from this epoch on, train the encoder's last fine_tune_blocks stages at encoder_lr (frozen before)",
    )
    fine_tune_blocks: int = opt(2, min=1, max=4)
    feature_cache: bool = False  # while the encoder is frozen, train from cached features (train.cache_dir)
    cache_dir: str | None = opt(
        None, help="where feature caches live (unset: $CAPTIONLAB_CACHE_DIR, else output/cache; `captionlab cache`)"
    )
    attention_reg: float = opt(1.0, min=0.0, help="doubly stochastic attention term (Xu et al.): weight")
    label_smoothing: float = opt(0.0, min=0.0, below=1.0, help="xe: share of each target spread over the vocabulary")
    ema_decay: float = opt(
        0.0, min=0.0, below=1.0, help="validate and save a moving average of the weights with this decay (0: off)"
    )
    loss: str = opt(
        "xe",
        registry="loss",
        help="xe: cross-entropy; scst: self-critical on the metric; contrastive: pretrain's InfoNCE",
    )
    lm_weight: float = opt(
        0.0,
        min=0.0,
        help="contrastive: weight of a next-token loss on the causal text tower (GPT-style), so that "
        "clip_gpt's decoder starts as a language model",
    )
    init_from: str | None = None  # start from this checkpoint: its weights, model config and vocabulary
    scst_samples: int = opt(5, min=1, help="captions sampled per image")
    scst_baseline: str = opt(
        "greedy",
        choices=("greedy", "mean"),
        help="greedy: the greedy caption's reward (Rennie et al.); mean: the other samples'",
    )
    scst_temperature: float = opt(1.0, above=0.0)
    scst_candidates: str = opt(
        "sample",
        choices=("sample", "beam"),
        help="sample: scst_samples drawn captions; beam: the scst_samples best of a beam that wide (M2's SCST)",
    )
    scst_reward: str = opt(
        "CIDEr",
        pattern=REWARD_PATTERN,
        help="CIDEr, Bleu_4, METEOR (slow: Java) or a weighted mix such as CIDEr:1,Bleu_4:0.5",
    )
    scst_max_len: int = opt(16, min=1, help="longest sampled caption")
    scst_update: str = opt(
        "all",
        choices=("all", "output", "output_bias"),
        help="the weights the reward moves: all; the output layer alone (the word scores); or its bias alone "
        "(one number a word), which a few hundred photos cannot make recite their own references",
    )


@dataclass
class DecodeConfig:
    beam_size: int = opt(3, min=1)
    max_len: int = opt(
        20, min=1, help="decoding steps, <end> included: at most max_len - 1 words (BPE pieces for GPT-2)"
    )
    length_penalty: float = opt(0.0, min=0.0)
    bad_endings: list[str] = field(
        default_factory=list,
        metadata={"help": "words a caption may not end on, e.g. [a, the, of, on, with]: <end> is barred after them"},
    )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        found = problems(self)  # rules across sections, and each model family's own
        if found:
            raise ConfigError(found[0])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return build(cls, d, "")


# ---------------------------------------------------------------- files and overrides


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``train.epochs=3 model.encoder.name=resnet18``: values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = raw  # e.g. an unbalanced quote: kept as text, the type check then decides
    return d


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MissingError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: a config file must be a mapping of sections (data, model, train, decode)")
    return RunConfig.from_dict(apply_overrides(d, overrides))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), "config")
