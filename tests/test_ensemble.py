"""Ensembles (S3) and the inputs a captioner builds: two different members give the mean of their per-step
that would read an image or write a caption differently are refused instead of fed the wrong input."""

from __future__ import annotations

import copy

import pytest
import torch

from captionlab import load_checkpoint
from captionlab.data import load_dataset, load_image
from captionlab.models.clipcap import CLIP_MEAN, CLIP_STD
from captionlab.models.ensemble import Ensemble


def test_an_ensemble_of_two_different_members_averages_their_next_word_probabilities(trained, trained_blind):
    (cfg, a), (_, b) = trained, trained_blind
    both = load_checkpoint([a.run_dir / "best.pt", b.run_dir / "best.pt"], "cpu")
    first, second = (load_checkpoint(r.run_dir / "best.pt", "cpu").model for r in (a, b))
    records = load_dataset(cfg.data).split("test")[:6]
    images = torch.stack([both.transform(load_image(r.path)) for r in records])  # (6, 3, H, W)
    with torch.no_grad():
        s, s1, s2 = both.model.init_state(images), first.init_state(images), second.init_state(images)
        tokens = torch.full((6,), both.model.start_id)
        for _ in range(4):  # a few steps along the ensemble's own greedy path
            lp, s = both.model.step(tokens, s)
            lp1, s1 = first.step(tokens, s1)
            lp2, s2 = second.step(tokens, s2)
            assert not torch.allclose(lp1, lp2, atol=1e-3)  # the members are not the same weights
            mean = ((lp1.exp() + lp2.exp()) / 2).log()  # (6, vocab)
            assert torch.allclose(lp, mean, atol=1e-5)
            tokens = lp.argmax(-1)


def test_members_that_read_images_or_write_captions_differently_are_refused(trained, tmp_path):
    cfg, result = trained
    best = result.run_dir / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    for key, value, words in (
        ("image_size", cfg.data.image_size + 32, "input sizes differ"),
        ("tokenizer", "zh_char", "tokenizers differ"),
    ):
        other = copy.deepcopy(ckpt)
        other["config"]["data"][key] = value
        torch.save(other, tmp_path / f"{key}.pt")
        with pytest.raises(ValueError, match=words):
            load_checkpoint([best, tmp_path / f"{key}.pt"], "cpu")
    model = load_checkpoint(best, "cpu").model
    clip_normed = copy.deepcopy(model)
    clip_normed.encoder.norm = (CLIP_MEAN, CLIP_STD)
    with pytest.raises(ValueError, match="normalise images differently"):
        Ensemble([model, clip_normed])


def test_an_ensemble_of_clipcap_checkpoints_is_fed_clip_normalised_images(trained_clipcap):
    _, result = trained_clipcap
    both = load_checkpoint([result.run_dir / "best.pt", result.run_dir / "last.pt"], "cpu")
    norm = next(t for t in both.transform.transforms if type(t).__name__ == "Normalize")
    assert tuple(norm.mean) == CLIP_MEAN and tuple(norm.std) == CLIP_STD  # ImageNet's before


def test_the_captioner_builds_model_inputs_on_the_model_device(trained):
    cfg, result = trained
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    paths = [r.path for r in load_dataset(cfg.data).split("test")[:3]]
    batch = captioner.batch([paths[0], load_image(paths[1]), str(paths[2])])
    assert batch.shape == (3, 3, cfg.data.image_size, cfg.data.image_size) and batch.device == captioner.device
    assert torch.equal(batch[1], captioner.transform(load_image(paths[1])))
