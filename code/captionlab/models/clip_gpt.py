"""clip_gpt (S3): a captioner started from contrastive pre-training.

It is a ``vit_transformer`` whose image encoder is the pre-trained image tower and whose decoder
starts from the pre-trained text tower (embeddings, positions, self-attention and feed-forward of
every block, final norm), with the output layer tied to the input embedding; only the
cross-attention and the memory projection start fresh. ``model.pretrained_from`` names the
``captionlab pretrain`` checkpoint; the vocabulary is that checkpoint's, so token ids line up.
``model.pretrained_towers`` takes only the image or only the text tower. A pre-trained image tower
is a pretrained encoder like ImageNet's: frozen unless ``model.encoder.fine_tune`` (so the
feature cache and ``train.fine_tune_from_epoch`` apply to it). Without ``pretrained_from``, the
same model starts from random weights (the comparison the README reports).
"""

from __future__ import annotations

from ..config import ModelConfig
from ..data.vocab import Vocabulary
from ..errors import InputError
from .registry import MODELS
from .transformer import ViTTransformer

MUST_MATCH = ("hidden_dim", "num_heads", "ff_dim", "num_layers", "max_positions", "positions")


@MODELS.register("clip_gpt")
class ClipGPT(ViTTransformer):
    """Built like any model from its config; ``training.factory.new_model`` then hands it the pre-training
    checkpoint (``load_pretrained``): a model never reads files while it is being constructed."""

    config_keys = ViTTransformer.config_keys | {"pretrained_from", "pretrained_towers"}

    def load_pretrained(self, ckpt: dict, cfg: ModelConfig) -> None:
        """Copy the towers ``cfg.pretrained_towers`` names from a ``captionlab pretrain`` checkpoint."""
        theirs = ckpt["config"]["model"]
        text, image = cfg.pretrained_towers in ("both", "text"), cfg.pretrained_towers in ("both", "image")
        for key in MUST_MATCH if text else ():
            if theirs[key] != getattr(cfg, key):
                raise InputError(
                    f"model.{key} = {getattr(cfg, key)!r} but the pre-trained text tower has "
                    f"{theirs[key]!r}: clip_gpt's decoder must have the text tower's shape"
                )
        if image and theirs["encoder"]["name"] != cfg.encoder.name:
            raise InputError(
                f"model.encoder.name = {cfg.encoder.name!r} but the pre-trained image tower is "
                f"{theirs['encoder']['name']!r}"
            )
        state = {}
        for k, v in ckpt["model"].items():
            if text and k.startswith("text."):
                state[k[len("text.") :]] = v
            elif image and k.startswith("encoder."):
                state[k] = v
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise InputError(f"model.pretrained_from: unexpected weights {unexpected[:5]}")
        self.started_from = sorted(state)  # what came from pre-training (tests check it)
        self.encoder.set_trainable(cfg.encoder_trainable())  # a pre-trained image tower is frozen by default

    @staticmethod
    def start_vocab(ckpt: dict, cfg: ModelConfig) -> Vocabulary | None:
        """The pre-training checkpoint's vocabulary: its text tower's embedding rows are these tokens."""
        return Vocabulary(ckpt["vocab"]) if cfg.pretrained_towers != "image" else None
