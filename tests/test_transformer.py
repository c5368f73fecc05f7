"""vit_transformer: the key/value cache gives what the teacher-forced pass gives, beams reorder it
with State.select, and a tiny trained model attends where the objects are."""

from __future__ import annotations

import pytest
import torch

from captionlab import decoding
from captionlab.captioner import load_checkpoint
from captionlab.config import EncoderConfig, ModelConfig
from captionlab.data.adapters import load_dataset
from captionlab.evaluation import evaluate_split
from captionlab.models import CaptionModel, build_model
from conftest import TINY_DECODER


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = kw.pop("encoder", EncoderConfig(name="vit_tiny", pretrained=False, image_size=64))
    cfg = ModelConfig(name="vit_transformer", encoder=enc, **TINY_DECODER, **kw)
    return build_model(cfg, 25).eval()


def captions(n: int, T: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    c = torch.randint(4, 25, (n, T), generator=g)
    c[:, 0] = 1
    return c


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"positions": "sinusoidal", "tie_embeddings": True},
        {"encoder": EncoderConfig(name="resnet18", pretrained=False), "grid_size": 2},
    ],
)
def test_cached_steps_equal_teacher_forcing(kw):
    model = tiny(**kw)
    images = torch.randn(3, 3, 64, 64)
    caps = captions(6, 10)  # two captions per image: the image keys are shared, not copied
    with torch.no_grad():
        full = torch.log_softmax(model(images, caps).float(), -1)
        # 1e-5, relative to the size of the log-probability (tied embeddings give some of -30)
        assert torch.allclose(
            CaptionModel.forward_features(model, model.encode(images), caps), full, atol=1e-5, rtol=1e-5
        )
        model.use_cache = False  # recomputing the prefix at each step: the same numbers
        assert torch.allclose(
            CaptionModel.forward_features(model, model.encode(images), caps), full, atol=1e-5, rtol=1e-5
        )


def test_a_step_costs_one_token():
    model = tiny()
    state = model.init_state(torch.randn(2, 3, 64, 64))
    for t in range(5):
        _, state = model.step(torch.full((2,), 1), state)
        assert state["k0"].shape[2] == t + 1  # the cache grows by one position per step
    assert state["image_k0"].shape[0] == 2 and "prefix" not in state


def test_batched_beam_equals_one_image_at_a_time():
    model = tiny()
    images = torch.randn(4, 3, 64, 64)
    batched = decoding.beam_search(model, images, beam_size=4, max_len=12)
    for i in range(4):
        one = decoding.beam_search(model, images[i : i + 1], beam_size=4, max_len=12)
        n = one.tokens.size(1)
        assert torch.equal(batched.tokens[i, :n], one.tokens[0])
        assert torch.allclose(batched.attention[i, :n], one.attention[0], atol=1e-5)
    assert batched.attention.shape[-1] == 16  # 4x4 patches at 64 px
    assert torch.allclose(batched.attention.sum(-1)[batched.tokens != 0], torch.tensor(1.0), atol=1e-5)


def test_too_long_for_its_positions_is_a_clear_error():
    with pytest.raises(ValueError, match="max_positions"):
        decoding.greedy(tiny(), torch.randn(1, 3, 64, 64), max_len=30)


@pytest.mark.xdist_group("trained_vit")  # its two tests on one worker: the other never waits for its training
def test_tiny_vit_transformer_learns_and_looks_at_the_objects(trained_vit):
    cfg, result = trained_vit
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    dataset = load_dataset(cfg.data)
    _, metrics = evaluate_split(
        captioner,
        dataset,
        "test",
        beam_size=3,
        max_len=16,
        metrics=("Bleu", "CIDEr"),
        tokenizer="simple",
        progress=False,
        grounding=True,
    )
    assert metrics["CIDEr"] > 0.6
    g = metrics["grounding"]
    assert g["grounding_rate"] > 2 * g["chance_rate"]
    trace = captioner.caption(dataset.split("test")[0].path, with_attention=True)[0]
    assert trace.attention.shape[1:] == (6, 6) and len(trace.words) == trace.attention.shape[0]


def test_pretrained_vit_weights_load_from_a_local_file_at_another_size(tmp_path):
    """The real-weights path with a stand-in file: torchvision's ViT-B/32 state dict (random here), read
    from model.encoder.weights and used at 64 px (position grid interpolated from 7x7 to 2x2)."""
    from torchvision.models import vit_b_32

    from captionlab.models.encoders import MissingWeightsError, ViTEncoder

    torch.manual_seed(0)
    reference = vit_b_32(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "vit_b_32.pth")
    enc = ViTEncoder(
        EncoderConfig(name="vit_b_32", pretrained=True, weights=str(tmp_path / "vit_b_32.pth"), image_size=224)
    ).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = enc(x)  # (1, 49, 768) patch tokens
        theirs = reference.encoder(torch.cat([reference.class_token, reference._process_input(x)], 1))[:, 1:]
    assert torch.allclose(ours, theirs, atol=1e-5) and not enc.trainable
    small = ViTEncoder(
        EncoderConfig(name="vit_b_32", pretrained=True, weights=str(tmp_path / "vit_b_32.pth"), image_size=64)
    )
    assert small(torch.randn(1, 3, 64, 64)).shape == (1, 4, 768)
    with pytest.raises(MissingWeightsError, match="file not found: .*missing.pth"):
        ViTEncoder(EncoderConfig(name="vit_b_32", pretrained=True, weights=str(tmp_path / "missing.pth")))


def test_sampling_through_the_cache_carries_gradients_for_scst():
    model = tiny().train()
    out = decoding.sample(model, torch.randn(2, 3, 64, 64), max_len=6, n=3)  # what SelfCriticalLoss draws
    assert out.tokens.shape[0] == 6
    out.logprobs.sum().backward()
    assert model.layers[0].self_attn.q.weight.grad.abs().sum() > 0  # through the cached keys/values
    assert model.layers[0].cross_attn.kv.weight.grad.abs().sum() > 0  # and the per-image cross-attention keys


@pytest.mark.xdist_group("trained_vit")  # its two tests on one worker: the other never waits for its training
def test_every_front_door_refuses_a_caption_longer_than_the_model_has_positions(trained_vit, capsys):
    """The tiny vit_transformer has 40 positions: max_len 40 decodes, 41 is refused in one line by
    `caption`, `evaluate` and `serve` (422 naming the limit, /info shows it) instead of a traceback or a 500."""
    from captionlab.cli import main
    from captionlab.serve.app import load_app
    from test_serve import call, upload

    cfg, result = trained_vit
    ckpt = result.run_dir / "best.pt"
    image = load_dataset(cfg.data).split("test")[0].path
    captioner = load_checkpoint(ckpt, "cpu")
    n = cfg.model.max_positions
    assert captioner.max_words == n == 40
    assert captioner.caption(image, beam_size=2, max_len=n)  # the longest caption it has positions for
    for argv in (["caption", str(ckpt), str(image)], ["evaluate", str(ckpt), "--split", "test"]):
        assert main([*argv, "--max-len", str(n + 1), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"max_len {n + 1} is longer than this vit_transformer model can write" in err
        assert f"at most {n} words" in err
    app = load_app([ckpt], "cpu")
    too_long, fine, info = call(
        app,
        [
            upload(image.read_bytes(), max_len=str(n + 1)),
            upload(image.read_bytes(), max_len=str(n)),
            {"method": "GET", "url": "/info"},
        ],
    )
    assert too_long.status_code == 422 and f"at most {n} words" in too_long.json()["detail"], too_long.text
    assert fine.status_code == 200 and info.json()["max_words"] == n
