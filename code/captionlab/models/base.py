"""The one interface between captioning models and everything else (decoding, training, SCST, ensembles).

A model gives teacher-forced logits (``forward``) and a single decoding step (``init_state`` /
``step``). The decoding engine, trainers and evaluation are written once against this interface and
never look inside a model's state.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..data.vocab import Vocabulary
from ..errors import InputError


class State(dict):
    """Decoder state: named tensors whose first dimension is the row (batch, or batch*beam).

    ``select`` reorders/expands every entry along that dimension, so beam search can grow and
    reorder beams without knowing what a model keeps. A model that attends stores the last
    step's weights under ``"attention"`` (rows, num_regions).

    Entries named ``image_*`` are per image, not per row: (images, ...), with ``per_image`` rows
    of each image adjacent. ``expand`` and any ``select`` that keeps rows inside their image leave
    them untouched, so beam search never copies region features (14x14x2048 per image at COCO
    size) at every step; a model reads them with ``rows_view``.
    """

    def __init__(self, *args, per_image: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        inherited = args[0].per_image if args and isinstance(args[0], State) else 1
        self.per_image: int = per_image if per_image is not None else inherited

    def select(self, index: torch.Tensor) -> State:
        k = self.per_image
        rows = {n: v.index_select(0, index) for n, v in self.items() if not n.startswith("image_")}
        if k == 1:
            return State(rows, **{n: v.index_select(0, index) for n, v in self.items() if n.startswith("image_")})
        own = torch.arange(index.numel(), device=index.device) // k
        if index.numel() == self.batch_size and torch.equal(index // k, own):  # beams stay with their image
            return State(rows, **{n: v for n, v in self.items() if n.startswith("image_")}, per_image=k)
        images = {n: v.index_select(0, index // k) for n, v in self.items() if n.startswith("image_")}
        return State(rows, **images, per_image=1)  # rows left their image: per-row copies

    def expand(self, n: int) -> State:
        """Repeat each row ``n`` times in place order: (a, b) -> (a, a, b, b) for n = 2."""
        if n == 1:
            return self
        index = torch.arange(self.batch_size, device=self._device).repeat_interleave(n)
        rows = {k: v.index_select(0, index) for k, v in self.items() if not k.startswith("image_")}
        return State(rows, **{k: v for k, v in self.items() if k.startswith("image_")}, per_image=self.per_image * n)

    def rows_view(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A per-row tensor (rows, ...) as (images, per_image, ...), to meet ``self[name]`` (images, ...)."""
        return x.view(self[name].size(0), self.per_image, *x.shape[1:])

    @property
    def _device(self) -> torch.device:
        return next(iter(self.values())).device

    @property
    def batch_size(self) -> int:
        """The number of rows."""
        for k, v in self.items():
            if not k.startswith("image_"):
                return v.size(0)
        return next(iter(self.values())).size(0) * self.per_image

    @property
    def attention(self) -> torch.Tensor | None:
        return self.get("attention")


class TrainableModel(nn.Module):
    """What the trainer and the run folder ask of any model they build, declared with its defaults so
    that nothing probes a model for what it has: a captioner (``CaptionModel``) or the pre-training
    dual encoder, which writes no captions and is registered apart from the captioners."""

    # Its vocabulary is a language model's tokenizer (``text_vocab``); build_model hands it ``vocab``
    # and ``assets`` (the architectures a checkpoint saved).
    uses_lm_vocab: ClassVar[bool] = False
    # It reads a datastore of reference images and their captions (retrieval_transformer): the trainer
    # fills it from the training split (``fill_datastore``) before the first step.
    uses_datastore: ClassVar[bool] = False
    # The model.* keys only some families read (grid_size, num_heads, clip, ...) that this one does:
    # set on a family that does not list them, config_rules refuses them ("does not apply to").
    config_keys: ClassVar[frozenset[str]] = frozenset()
    attention_maps: torch.Tensor | None = None  # (B*n, T-1, regions) of the last forward, where a model keeps them

    def __init__(self, vocab_size: int, blind: bool = False) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.blind = blind  # the ablation that ignores the image: encode() returns zeros

    # -- what the model is, asked before it is built ------------------------------------------------
    @classmethod
    def config_problems(cls, cfg: Any) -> list[str]:
        """Cross-key config rules of this family (config_rules runs them before anything loads)."""
        return []

    @classmethod
    def text_vocab(cls, cfg: Any, tokenizer: str) -> Vocabulary | None:
        """The model's own vocabulary (a language model's tokenizer), or None: built from the captions."""
        return None

    @staticmethod
    def start_vocab(ckpt: dict, cfg: Any) -> Vocabulary | None:
        """The vocabulary of the pre-trained towers in ``ckpt``, where the model starts from them."""
        return None

    def load_pretrained(self, ckpt: dict, cfg: Any) -> None:
        """Start from the towers of a ``captionlab pretrain`` checkpoint (``model.pretrained_from``: the
        config refuses the key for a family that does not list it in ``config_keys``)."""
        raise NotImplementedError(f"{type(self).__name__} starts from no pre-trained towers")

    def fill_datastore(self, features: torch.Tensor, captions: torch.Tensor) -> None:
        """Reference images' pooled features (N, D) and captions (N, per_image, L), for a model that
        ``uses_datastore``; they are saved with its weights."""
        raise NotImplementedError(f"{type(self).__name__} reads no datastore")

    def assets(self) -> dict[str, Any] | None:
        """What a checkpoint needs besides the weights to rebuild the model with no directory."""
        return None

    # -- images ---------------------------------------------------------------------------------------
    @property
    def image_encoder(self) -> nn.Module | None:
        """The trainable/freezable image encoder (``self.encoder``), None for a model fed features."""
        return self._modules.get("encoder")

    @property
    def image_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) images are normalised with: what the image encoder's weights were trained
        with (ImageNet's for ResNet and ViT, TF-Lite's for EfficientNet-Lite, CLIP's for ClipCap)."""
        encoder = self.image_encoder
        return encoder.norm if encoder is not None else (IMAGENET_MEAN, IMAGENET_STD)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> what the decoder reads: the encoder's output (regions or patches)."""
        return self.image_encoder(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``features``, or zeros of their shape for the blind ablation; the feature cache stores these."""
        feats = self.features(images)
        return feats * 0 if self.blind else feats


class CaptionModel(TrainableModel):
    """The contract every captioner meets, so that training, SCST, ensembles, the feature cache and
    decoding never care which model they drive.

    A model file implements ``init_state_from_features`` and ``step`` (and, for speed, a whole-sequence
    ``forward_features``); it overrides ``features`` if its encoder's output is not what the decoder
    reads, and the hooks of ``TrainableModel`` only where it differs from a plain captioner."""

    pad_id, start_id, end_id, unk_id = Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.end_id, Vocabulary.unk_id

    # -- decoding -------------------------------------------------------------------------------------
    @property
    def max_words(self) -> int | None:
        """The longest caption the model can decode, in steps (``<end>`` included): a Transformer has
        ``model.max_positions`` positions, GPT-2 its own less the prefix; None where nothing limits it (RNNs)."""
        return None

    def init_state(self, images: torch.Tensor) -> State:
        return self.init_state_from_features(self.encode(images))

    def init_state_from_features(self, feats: torch.Tensor) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens (batch,) -> log-probabilities (batch, vocab) of the next token, and the new state."""
        raise NotImplementedError

    @staticmethod
    def expand_for(state: State, captions: torch.Tensor) -> State:
        n, rem = divmod(captions.size(0), state.batch_size)
        if rem or n < 1:
            raise InputError(
                f"{captions.size(0)} captions for {state.batch_size} images: "
                "need the same number of captions for every image"
            )
        return state.expand(n)

    def output_layer(self) -> nn.Module:
        """The layer that turns the decoder's state into word scores (``train.scst_update=output`` trains
        it alone; where a model ties it to the word embeddings, they move with it). ``out`` by convention."""
        layer = self._modules.get("out")
        if layer is None:
            raise InputError(f"{type(self).__name__} has no output layer named 'out': train.scst_update=output")
        return layer

    # -- teacher forcing ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: captions (batch, T) starting with <start> -> scores (batch, T-1, vocab)
        predicting captions[:, 1:]: logits or log-probabilities (cross-entropy normalises either).

        ``captions`` may hold ``n`` captions per image (batch*n rows, each image's captions adjacent):
        the image is then encoded once and its state shared, as ``expand_for`` does."""
        return self.forward_features(self.encode(images), captions)

    def forward_features(self, feats: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """``forward`` from encoded features (training from the cache). This generic version runs
        ``step``; models override it with a faster whole-sequence pass that must agree with it."""
        state = self.expand_for(self.init_state_from_features(feats), captions)
        logits = []
        for t in range(captions.size(1) - 1):
            logprobs, state = self.step(captions[:, t], state)
            logits.append(logprobs)
        return torch.stack(logits, 1)


class FeatureInput(CaptionModel):
    """A captioner fed encoder features instead of images (cached features, decoder benchmarks):
    ``init_state``/``forward`` take what the model's ``encode`` would return. Same weights, no copy."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__(model.vocab_size)
        self.model = model

    @property
    def attention_maps(self) -> torch.Tensor | None:  # type: ignore[override]
        return getattr(self.model, "attention_maps", None)  # it also wraps the dual encoder, which keeps none

    @property
    def max_words(self) -> int | None:
        return self.model.max_words

    def init_state(self, feats: torch.Tensor) -> State:
        return self.model.init_state_from_features(feats)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.model.step(tokens, state)

    def forward(self, feats: torch.Tensor, captions: torch.Tensor, **options: Any) -> Any:
        return self.model.forward_features(feats, captions, **options)
