"""A frozen pretrained encoder: train the decoder from cached features (same loss, never stale),
then fine-tune the last ResNet stages from a given epoch, resumable."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from captionlab import load_checkpoint
from captionlab.data import load_dataset
from captionlab.data.images import build_transform
from captionlab.evaluation import caption_records
from captionlab.models import build_model
from captionlab.training.feature_cache import cache_key
from captionlab.training.trainer import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)  # stands in for ImageNet weights: loaded, then frozen
    return path


def frozen(tiny_cfg_factory, tmp, weights, *extra):
    return tiny_cfg_factory(
        tmp,
        "data.synthetic_n=120",
        f"data.path={tmp.parent / 'data'}",
        "train.epochs=1",
        "model.encoder.name=resnet18",
        "model.encoder.pretrained=true",
        f"model.encoder.weights={weights}",
        "model.dropout=0.0",
        *extra,
    )


def first_loss(run_dir) -> float:
    return epoch_losses(run_dir)[0]


def epoch_losses(run_dir) -> list[float]:
    return [float(r["train_loss"]) for r in csv.DictReader((run_dir / "log.csv").open())]


def test_cached_features_give_the_on_the_fly_loss_and_a_changed_transform_rebuilds(tmp_path, tiny_cfg_factory, weights):
    # two epochs, two of each image's five captions an epoch: a cache that froze the captions' draw (its
    # copy of the epoch stuck at 0) would train epoch 2 on other captions than the images do
    picks = ("train.epochs=2", "train.seq_per_img=2")
    plain = train(frozen(tiny_cfg_factory, tmp_path / "a", weights, *picks), progress=False)
    cached_cfg = frozen(tiny_cfg_factory, tmp_path / "b", weights, *picks, "train.feature_cache=true")
    cached = train(cached_cfg, progress=False)
    assert epoch_losses(cached.run_dir) == pytest.approx(epoch_losses(plain.run_dir), rel=2e-3)
    cache_dir = tmp_path / "b" / "cache"
    assert len(list(cache_dir.glob("*.npy"))) == 2  # the training images' and the val images'
    noisy = ("train.feature_cache=true", "model.dropout=0.3")  # dropout draws from the global generator
    builds = train(frozen(tiny_cfg_factory, tmp_path / "d", weights, *noisy), progress=False)
    finds = train(frozen(tiny_cfg_factory, tmp_path / "d", weights, *noisy, "train.run_name=again"), progress=False)
    assert first_loss(finds.run_dir) == first_loss(builds.run_dir)  # building the cache changes no random draw
    train(
        frozen(
            tiny_cfg_factory,
            tmp_path / "b",
            weights,
            "train.feature_cache=true",
            "data.image_size=56",
            "train.run_name=smaller",
        ),
        progress=False,
    )
    assert len(list(cache_dir.glob("*.npy"))) == 4  # another transform, other caches: never a stale one
    cfg = frozen(tiny_cfg_factory, tmp_path / "c", weights).model
    model = build_model(cfg, 20)
    records = load_dataset(frozen(tiny_cfg_factory, tmp_path / "c", weights).data).split("train")
    assert cache_key(model, cfg, records, build_transform(64)) != cache_key(model, cfg, records, build_transform(56))
    assert cache_key(model, cfg, records, build_transform(64)) != cache_key(
        model, cfg, records[:-1], build_transform(64)
    )


def test_validation_from_cached_val_features_captions_as_from_the_images(tmp_path, tiny_cfg_factory, weights):
    cfg = frozen(tiny_cfg_factory, tmp_path, weights, "train.feature_cache=true", "train.epochs=2")
    run = train(cfg, progress=False)
    captioner = load_checkpoint(run.run_dir / "best.pt", "cpu")
    val = load_dataset(cfg.data).split("val")
    (feats,) = [f for f in map(np.load, (tmp_path / "cache").glob("*.npy")) if len(f) == len(val)]
    from_images = caption_records(captioner, val, 3, 16)
    assert len(set(from_images.values())) > 1  # not one caption for every image
    assert caption_records(captioner, val, 3, 16, features=feats) == from_images


def test_fine_tuning_opens_the_last_stages_from_the_given_epoch_and_resumes_exactly(
    tmp_path, tiny_cfg_factory, weights
):
    args = ("train.fine_tune_from_epoch=2", "train.fine_tune_blocks=1", "train.feature_cache=true")
    ref = torch.load(weights, weights_only=True)
    one = train(frozen(tiny_cfg_factory, tmp_path / "a", weights, *args), progress=False)
    enc = one.model.encoder.body
    assert torch.equal(enc[7][0].conv1.weight, ref["layer4.0.conv1.weight"])  # epoch 1: frozen
    two = train(frozen(tiny_cfg_factory, tmp_path / "a", weights, *args, "train.epochs=2"), resume=True, progress=False)
    enc = two.model.encoder.body
    assert not torch.equal(enc[7][0].conv1.weight, ref["layer4.0.conv1.weight"])  # epoch 2: layer4 trains
    assert torch.equal(enc[6][0].conv1.weight, ref["layer3.0.conv1.weight"])  # layer3 stays frozen
    assert torch.equal(enc[7][0].bn1.running_mean, ref["layer4.0.bn1.running_mean"])  # BN statistics frozen
    straight = train(frozen(tiny_cfg_factory, tmp_path / "b", weights, *args, "train.epochs=2"), progress=False)
    a = torch.load(straight.run_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(two.run_dir / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_fine_tuning_a_trainable_encoder_is_refused(tmp_path, tiny_cfg_factory):
    with pytest.raises(ValueError, match="needs a frozen pretrained encoder"):
        train(
            tiny_cfg_factory(
                tmp_path, "data.synthetic_n=30", f"data.path={tmp_path / 'data'}", "train.fine_tune_from_epoch=2"
            ),
            progress=False,
        )


def test_the_small_cnn_gives_a_resnet_shaped_map_opens_by_stage_and_has_no_pretrained_weights():
    """The tiny configs' encoder: ResNet's (B, C, H/32, W/32) map, so grid and global models take it
    alike; a map that follows the image at random init (every model's image test relies on it)."""
    from captionlab.config import EncoderConfig
    from captionlab.models.encoders import ENCODERS, SmallCNNEncoder, build_cnn

    enc = build_cnn(EncoderConfig(name="small_cnn", pretrained=False))
    assert ENCODERS.get("small_cnn") is SmallCNNEncoder and enc.trainable
    x = torch.rand(2, 3, 96, 64)
    fmap = enc.eval()(x)  # (2, 256, 3, 2)
    assert fmap.shape == (2, enc.out_dim, 3, 2) and enc.out_dim == 256
    assert (fmap[0] - fmap[1]).abs().mean() > 0.1 * fmap.abs().mean()  # two images, two maps
    enc.fine_tune_last(1)
    opened = [p.requires_grad for p in enc.parameters()]  # conv, BN weight and bias a stage
    assert opened == [False] * 12 + [True] * 3
    with pytest.raises(ValueError, match="small_cnn has no pretrained weights"):
        build_cnn(EncoderConfig(name="small_cnn", pretrained=True))
