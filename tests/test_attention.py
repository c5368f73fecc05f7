"""Attention captioners: one engine, exact bookkeeping, the doubly stochastic term, heat-maps,
grounding above chance, ensembles."""

from __future__ import annotations

import pytest
import torch

from captionlab import decoding, load_checkpoint
from captionlab.config import EncoderConfig, ModelConfig
from captionlab.models import build_model
from captionlab.models.base import State
from captionlab.training.losses import CrossEntropyLoss

NAMES = ["show_attend_tell", "adaptive_attention"]
# and Show-Attend-Tell with its regions projected first (model.region_dim)
VARIANTS = [("show_attend_tell", {}), ("show_attend_tell", {"region_dim": 20}), ("adaptive_attention", {})]


def tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        name=name,
        encoder=EncoderConfig(name="resnet18", pretrained=False),
        embed_dim=16,
        hidden_dim=32,
        attention_dim=24,
        grid_size=3,
        dropout=0.0,
        **kw,
    )
    return build_model(cfg, 30).eval()


def captions(n: int, t: int = 7) -> torch.Tensor:
    c = torch.randint(3, 30, (n, t), generator=torch.Generator().manual_seed(1))
    c[:, 0] = 1
    return c


@pytest.mark.parametrize(("name", "kw"), VARIANTS)
def test_teacher_forcing_equals_stepping(name, kw):
    model, images = tiny(name, **kw), torch.randn(3, 3, 64, 64)
    caps = captions(6)  # two captions per image
    with torch.no_grad():
        forced = model(images, caps).log_softmax(-1)
        state = model.expand_for(model.init_state(images), caps)
        stepped = []
        for t in range(caps.size(1) - 1):
            lp, state = model.step(caps[:, t], state)
            stepped.append(lp)
    assert torch.allclose(forced, torch.stack(stepped, 1), atol=1e-5)


@pytest.mark.parametrize(("name", "kw"), VARIANTS)
def test_batched_beam_equals_one_image_at_a_time(name, kw):
    model, images = tiny(name, **kw), torch.randn(4, 3, 64, 64)
    batched = decoding.beam_search(model, images, beam_size=3, max_len=8)
    for i in range(4):
        alone = decoding.beam_search(model, images[i : i + 1], beam_size=3, max_len=8)
        n = alone.tokens.size(1)
        assert torch.equal(batched.tokens[i, :n], alone.tokens[0])
        assert torch.allclose(batched.attention[i, :n], alone.attention[0], atol=1e-5)


def test_region_dim_projects_the_regions_the_cell_and_gate_read():
    plain, projected = tiny("show_attend_tell"), tiny("show_attend_tell", region_dim=20)
    assert plain.region_embed is None and plain.cell.input_size == 16 + 512  # ResNet-18's own width
    assert projected.cell.input_size == 16 + 20 and projected.f_beta.out_features == 20
    state = projected.init_state(torch.randn(2, 3, 64, 64))
    assert state["image_feats"].shape == (2, 9, 20) and state["image_keys"].shape == (2, 9, 24)


@pytest.mark.parametrize("name", NAMES)
def test_attention_rows_sum_to_one_with_the_sentinel(name):
    model = tiny(name)
    out = decoding.beam_search(model, torch.randn(2, 3, 64, 64), beam_size=2, max_len=6)
    total = out.attention.sum(-1) + (out.sentinel if out.sentinel is not None else 0)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert (out.sentinel is not None) == (name == "adaptive_attention")
    if out.sentinel is not None:
        assert ((out.sentinel > 0) & (out.sentinel < 1)).all()


def test_adaptive_sentinel_is_held_off_for_the_warm_up_batches_and_the_count_survives_a_checkpoint():
    model = tiny("adaptive_attention", sentinel_warmup_steps=2, sentinel_bias=0.0).train()
    feats, caps = torch.randn(2, 9, model.feature_dim), captions(2)
    weights: list[float] = []
    step = model._step

    def spy(tokens, state):
        logits, new = step(tokens, state)
        weights.append(float(new["sentinel"].detach().max()))
        return logits, new

    model._step = spy
    largest = []
    for _ in range(3):
        weights.clear()
        model.forward_features(feats, caps)
        largest.append(max(weights))
    assert largest[0] == 0.0 and largest[1] == 0.0 and largest[2] > 0.01  # batches 1-2 held off, then open
    model.eval()
    weights.clear()
    model.forward_features(feats, caps)  # decoding and validation never hold it off, nor count
    assert max(weights) > 0.01 and int(model.batches_seen) == 3
    resumed = tiny("adaptive_attention", sentinel_warmup_steps=2)
    resumed.load_state_dict(model.state_dict())
    assert int(resumed.batches_seen) == 3
    older = {k: v for k, v in model.state_dict().items() if k != "batches_seen"}  # a checkpoint from before
    resumed.load_state_dict(older)
    assert int(resumed.batches_seen) > 2  # taken as past any warm-up
    resumed.train().forward_features(feats, caps)  # and training on from it keeps it so
    assert int(resumed.batches_seen) > 2


def test_doubly_stochastic_term_changes_the_loss_and_its_gradient():
    model = tiny("show_attend_tell").train()
    images, caps = torch.randn(2, 3, 64, 64), captions(2)
    grads = []
    for reg in (0.0, 1.0):
        model.zero_grad()
        loss, stats = CrossEntropyLoss(reg)(model, images, caps)
        loss.backward()
        grads.append(model.att_score.weight.grad.clone())
    assert "attention_reg" in stats and stats["attention_reg"] > 0
    assert not torch.allclose(grads[0], grads[1])


def test_state_keeps_per_image_entries_when_beams_stay_with_their_image():
    feats = torch.randn(2, 5, 3)
    state = State(h=torch.arange(2.0).unsqueeze(1), image_feats=feats).expand(3)
    assert state.per_image == 3 and state["h"].shape == (6, 1) and state["image_feats"] is feats
    kept = state.select(torch.tensor([2, 0, 0, 5, 3, 4]))
    assert kept["image_feats"] is feats and kept.per_image == 3
    mixed = state.select(torch.tensor([3, 0]))  # rows leave their image: per-row copies
    assert mixed.per_image == 1 and torch.equal(mixed["image_feats"], feats[[1, 0]])


@pytest.mark.slow
def test_grounding_is_well_above_chance(trained_attention):
    from captionlab.data import load_dataset
    from captionlab.evaluation import evaluate_split

    cfg, result = trained_attention
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    _, m = evaluate_split(
        captioner, load_dataset(cfg.data), "test", 3, 16, ("CIDEr",), "simple", progress=False, grounding=True
    )
    g = m["grounding"]
    assert g["words"] > 50 and g["grounding_rate"] > g["chance_rate"] + 0.3, g


@pytest.mark.slow
def test_attention_plot_is_written_and_a_model_without_attention_says_so(trained_attention, trained, tmp_path, capsys):
    from captionlab.cli import main
    from captionlab.data import load_dataset

    cfg, result = trained_attention
    image = str(load_dataset(cfg.data).split("test")[0].path)
    out = tmp_path / "att.png"
    assert (
        main(["caption", str(result.run_dir / "best.pt"), image, "--attention-plot", str(out), "--device", "cpu"]) == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    traces = load_checkpoint(result.run_dir / "best.pt", "cpu").caption([image], with_attention=True)
    assert traces[0].attention.shape == (len(traces[0].words), 3, 3)
    capsys.readouterr()
    assert main(["caption", str(trained[1].run_dir / "best.pt"), image, "--attention-plot", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cnn_gru has no attention" in err and err.count("\n") == 1


@pytest.mark.slow
def test_ensemble_of_one_equals_the_model_and_mismatched_vocabularies_are_refused(trained_attention, tmp_path):
    from captionlab.data import load_dataset, load_image
    from captionlab.models.ensemble import Ensemble

    cfg, result = trained_attention
    single = load_checkpoint(result.run_dir / "best.pt", "cpu")
    records = load_dataset(cfg.data).split("test")[:8]
    images = torch.stack([single.transform(load_image(r.path)) for r in records])
    a = decoding.beam_search(single.model, images, 3, 12)
    b = decoding.beam_search(Ensemble([single.model]).eval(), images, 3, 12)
    assert torch.equal(a.tokens, b.tokens) and torch.allclose(a.scores, b.scores, atol=1e-5)
    twice = load_checkpoint([result.run_dir / "best.pt", result.run_dir / "last.pt"], "cpu")
    assert len(twice.caption([r.path for r in records], beam_size=3)) == 8
    ckpt = torch.load(result.run_dir / "best.pt", weights_only=True)
    ckpt["vocab"] = ckpt["vocab"][:4] + list(reversed(ckpt["vocab"][4:]))
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="vocabularies differ"):
        load_checkpoint([result.run_dir / "best.pt", tmp_path / "other.pt"], "cpu")
