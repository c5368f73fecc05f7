"""End to end on the tiny synthetic set: learning, checkpoints, resume, beam vs greedy."""

from __future__ import annotations

import csv

import pytest
import torch

from captionlab import decoding, load_checkpoint
from captionlab.config import load_config
from captionlab.data import load_dataset
from captionlab.evaluation import caption_records
from captionlab.metrics import score
from captionlab.training.trainer import train

pytestmark = pytest.mark.slow


def _test_cider(cfg, run_dir, beam: int = 3) -> float:
    captioner = load_checkpoint(run_dir / "best.pt", "cpu")
    ds = load_dataset(cfg.data)
    caps = caption_records(captioner, ds.split("test"), beam, 16, progress=False)
    return score(caps, ds.references("test"), ("CIDEr",), "simple")["CIDEr"]


def test_seeing_model_beats_the_blind_model(trained, trained_blind):
    (cfg, result), (bcfg, blind) = trained, trained_blind
    seeing, deaf = _test_cider(cfg, result.run_dir), _test_cider(bcfg, blind.run_dir)
    assert seeing > deaf + 0.5, (seeing, deaf)  # measured 2026-12-07: 1.342 against 0.561


def test_run_writes_best_last_log_and_config(trained):
    cfg, result = trained
    for name in ("best.pt", "last.pt", "log.csv", "config.yaml"):
        assert (result.run_dir / name).is_file()
    rows = list(csv.DictReader((result.run_dir / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, cfg.train.epochs + 1))  # 1-based, as printed
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    best = max(rows, key=lambda r: float(r["CIDEr"]))
    assert int(best["epoch"]) == result.best_epoch


def test_checkpoint_loads_with_weights_only_and_alone_captions_images(trained):
    cfg, result = trained
    ckpt = torch.load(result.run_dir / "best.pt", weights_only=True)
    assert ckpt["format"] == 2 and ckpt["vocab"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert ckpt["config"]["model"]["name"] == "cnn_gru" and "CIDEr" in ckpt["metrics"]
    paths = [r.path for r in load_dataset(cfg.data).split("test")[:6]]
    a = load_checkpoint(result.run_dir / "best.pt", "cpu").caption(paths, beam_size=3)
    b = load_checkpoint(result.run_dir / "best.pt", "cpu").caption(paths, beam_size=3)
    assert a == b and all(isinstance(c, str) and c for c in a)


def test_beam_search_finds_more_probable_captions_than_greedy_on_the_trained_model(trained):
    """Plain beam search (without the greedy candidate it normally keeps, which would make "beam >=
    greedy" true by construction) beats greedy on some images (not on average: on this model it often
    runs to max_len where greedy ends early), its scores are the trained model's own teacher-forced
    log-probabilities of the captions it returns, and the default search takes the better of the two."""
    cfg, result = trained
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    images = captioner.batch([r.path for r in load_dataset(cfg.data).split("test")])  # (N, 3, H, W)
    g = decoding.greedy(captioner.model, images, 16)
    b = decoding.beam_search(captioner.model, images, beam_size=3, max_len=16, keep_greedy=False)
    start = torch.full((len(images), 1), captioner.model.start_id)
    with torch.no_grad():
        logp = captioner.model(images, torch.cat([start, b.tokens], 1)).log_softmax(-1)  # (N, T, vocab)
    token_lp = logp.gather(-1, b.tokens.unsqueeze(-1)).squeeze(-1) * (b.tokens != 0)  # (N, T), pads zeroed
    assert torch.allclose(token_lp.sum(1), b.scores, atol=1e-4)
    assert (b.scores > g.scores + 1e-5).any()  # it finds more probable captions than greedy's somewhere
    kept = decoding.beam_search(captioner.model, images, beam_size=3, max_len=16)  # with the greedy candidate
    assert (kept.scores >= torch.maximum(b.scores, g.scores) - 1e-4).all()  # the better of the two, per image


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path, tiny_cfg_factory):
    common = ("data.synthetic_n=60", f"data.path={tmp_path / 'data'}", "train.batch_size=8")
    straight = train(tiny_cfg_factory(tmp_path / "a", *common, "train.epochs=2"), progress=False)
    first = train(tiny_cfg_factory(tmp_path / "b", *common, "train.epochs=1"), progress=False)
    assert first.history[-1]["epoch"] == 1
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_cfg_factory(tmp_path / "b", *common, "train.epochs=2"), progress=False)
    resumed = train(tiny_cfg_factory(tmp_path / "b", *common, "train.epochs=2"), resume=True, progress=False)
    assert [int(r["epoch"]) for r in resumed.history] == [1, 2]
    a = torch.load(straight.run_dir / "last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6), k


def test_resume_applies_new_learning_rates_and_refuses_another_model(tmp_path, tiny_cfg_factory):
    """The optimiser's saved groups used to bring back the old rates while config.yaml said the new ones;
    another architecture failed inside load_state_dict; `--resume train.epochs=20` took the override
    for a checkpoint path."""
    from captionlab.cli import parse_args
    from captionlab.errors import InputError

    common = ("data.synthetic_n=40", f"data.path={tmp_path / 'data'}", "train.batch_size=8")
    train(tiny_cfg_factory(tmp_path, *common, "train.epochs=1"), progress=False)
    new = ("train.epochs=2", "train.lr=1.0e-5", "train.weight_decay=0.01")
    resumed = train(tiny_cfg_factory(tmp_path, *common, *new), resume=True, progress=False)
    group = torch.load(resumed.run_dir / "last.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert (group["base_lr"], group["lr"], group["weight_decay"]) == (1.0e-5, 1.0e-5, 0.01)
    assert load_config(resumed.run_dir / "config.yaml").train.lr == 1.0e-5  # what config.yaml says is true
    with pytest.raises(InputError, match=r"another model: model.hidden_dim is 48 here, \d+ there"):
        train(tiny_cfg_factory(tmp_path, *common, "train.epochs=3", "model.hidden_dim=48"), resume=True, progress=False)
    args = parse_args(["train", "cfg.yaml", "--resume", "train.epochs=20"])
    assert args.resume == "last" and args.overrides == ["train.epochs=20"]


def test_a_missing_val_split_is_refused_before_training(tmp_path, tiny_cfg_factory):
    """It used to surface after a whole epoch, from the first validation."""
    import json

    from PIL import Image

    from captionlab.errors import InputError

    (tmp_path / "imgs").mkdir()
    sentences = [{"raw": "a red square", "tokens": ["a", "red", "square"]}]
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
    images = [{"filepath": "imgs", "filename": f"{i}.png", "split": "train", "sentences": sentences} for i in range(4)]
    (tmp_path / "data.json").write_text(json.dumps({"images": images}))
    cfg = tiny_cfg_factory(tmp_path, "data.format=karpathy", f"data.path={tmp_path / 'data.json'}")
    with pytest.raises(InputError, match=r"no val split \(splits: \['train'\]\)"):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_failed_validation_keeps_the_epoch_it_follows(tmp_path, tiny_cfg_factory, monkeypatch):
    import captionlab.training.epoch_end as epoch_end  # where the epoch-end validation is called

    common = ("data.synthetic_n=40", f"data.path={tmp_path / 'data'}", "train.batch_size=8")
    real = epoch_end.validate
    monkeypatch.setattr(epoch_end, "validate", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        train(tiny_cfg_factory(tmp_path, *common, "train.epochs=2"), progress=False)
    run = tmp_path / "runs" / "tiny_cnn_gru"
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(epoch_end, "validate", real)
    resumed = train(tiny_cfg_factory(tmp_path, *common, "train.epochs=2"), resume=True, progress=False)
    assert [int(r["epoch"]) for r in resumed.history] == [1, 2] and resumed.best_epoch == 2


def test_the_weight_average_validates_is_saved_as_best_and_resumes(tmp_path, tiny_cfg_factory):
    """train.ema_decay: best.pt holds the moving average (not the last step's weights), last.pt carries
    the average, and a resumed run continues the same average as one that never stopped."""
    common = ("data.synthetic_n=60", f"data.path={tmp_path / 'data'}", "train.batch_size=8", "train.ema_decay=0.9")
    straight = train(tiny_cfg_factory(tmp_path / "a", *common, "train.epochs=2"), progress=False)
    first = train(tiny_cfg_factory(tmp_path / "b", *common, "train.epochs=1"), progress=False)
    best = torch.load(first.run_dir / "best.pt", weights_only=True)["model"]  # epoch 1 is best: the first
    last = torch.load(first.run_dir / "last.pt", weights_only=True)
    shadow = last["extra"]["ema"]["shadow"]
    assert shadow and all(torch.equal(best[k], v) for k, v in shadow.items())
    assert any(not torch.allclose(last["model"][k], v) for k, v in shadow.items())  # not the raw weights
    resumed = train(tiny_cfg_factory(tmp_path / "b", *common, "train.epochs=2"), resume=True, progress=False)
    a, b = (torch.load(r.run_dir / "last.pt", weights_only=True)["extra"]["ema"] for r in (straight, resumed))
    assert a["updates"] == b["updates"] > 0
    for k in a["shadow"]:
        assert torch.allclose(a["shadow"][k], b["shadow"][k], atol=1e-6), k


def test_label_smoothing_spreads_each_target_over_the_vocabulary():
    from captionlab.training.losses import CrossEntropyLoss

    class Fixed(torch.nn.Module):
        attention_maps = None

        def forward(self, images, captions):
            return torch.linspace(-2, 2, 3 * 4 * 7).view(3, 4, 7).sin() * 3  # (B, T-1, vocab)

    captions = torch.tensor([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [1, 3, 3, 3, 2]])  # 0 is <pad>
    logp = Fixed()(None, None).log_softmax(-1)
    target, real = captions[:, 1:], captions[:, 1:] != 0
    nll = -logp.gather(-1, target[..., None])[..., 0]
    expected = (0.9 * nll - 0.1 * logp.mean(-1))[real].mean()
    loss, _ = CrossEntropyLoss(label_smoothing=0.1)(Fixed(), None, captions)
    assert torch.allclose(loss, expected, atol=1e-6) and not torch.allclose(loss, nll[real].mean())


def test_amp_request_on_cpu_warns_and_trains_in_float32(tmp_path, tiny_cfg_factory, capsys):
    cfg = tiny_cfg_factory(
        tmp_path,
        "data.synthetic_n=30",
        f"data.path={tmp_path / 'data'}",
        "train.epochs=1",
        "train.amp=true",
        "train.device=cpu",
    )
    result = train(cfg, progress=False)
    assert "note     train.amp applies on CUDA only" in capsys.readouterr().out  # the trainer's one channel
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.parametrize(
    "schedule, expected",  # factor at (epoch, step) for 4 epochs, warm-up 10 steps, step size 2, gamma 0.5
    [
        ("constant", {(0, 0): 0.1, (0, 4): 0.5, (0, 9): 1.0, (3, 50): 1.0}),
        ("step", {(0, 9): 1.0, (1, 30): 1.0, (2, 40): 0.5, (3, 50): 0.5}),
        ("cosine", {(0, 9): 1.0, (1, 30): 0.5 * (1 + 2**-0.5), (2, 40): 0.5, (3, 50): 0.5 * (1 - 2**-0.5)}),
    ],
)
def test_learning_rate_schedules_and_warm_up(schedule, expected):
    from captionlab.config import load_config
    from captionlab.training.setup import lr_factor

    step = ["train.lr_step_epochs=2", "train.lr_gamma=0.5"] if schedule == "step" else []  # refused elsewhere
    cfg = load_config(None, [f"train.lr_schedule={schedule}", "train.epochs=4", "train.warmup_steps=10", *step])
    for (epoch, step), factor in expected.items():
        assert lr_factor(cfg, epoch, step) == pytest.approx(factor), (schedule, epoch, step)


def test_the_one_optimizer_step_syncs_after_backward_clips_then_steps():
    """``optim.optimizer_step``, which the Trainer, vlm-finetune and the tiny language models share."""
    from captionlab.optim import optimizer_step

    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    seen = []
    loss = (w * torch.tensor([30.0, 40.0])).sum()  # gradient (30, 40): norm 50
    optimizer_step(loss, opt, [w], grad_clip=5.0, sync=lambda: seen.append(w.grad.clone()))
    assert torch.equal(seen[0], torch.tensor([30.0, 40.0]))  # the whole gradient, before clipping
    assert torch.allclose(w.detach(), torch.tensor([0.0, 0.0]), atol=1e-6)  # clipped to (3, 4), then stepped
    optimizer_step(w.sum(), opt, [w])  # no clipping; the last step's gradient is gone
    assert torch.allclose(w.detach(), torch.tensor([-1.0, -1.0]), atol=1e-6)


def test_the_feature_cache_lives_in_train_cache_dir_and_captionlab_cache_lists_and_clears_it(tmp_path, capsys):
    """It lived two levels above the run (train.output_dir=/runs wrote /cache)."""
    from captionlab.cli import main
    from conftest import TINY

    over = [f"train.output_dir={tmp_path / 'out' / 'runs'}", f"train.cache_dir={tmp_path / 'features'}"]
    over += ["data.synthetic_n=40", f"data.path={tmp_path / 'data'}", "train.epochs=1", "train.batch_size=8"]
    over += ["train.feature_cache=true", "model.encoder.frozen=true"]
    train(load_config(TINY, over), progress=False)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2 and not (tmp_path / "out" / "cache").exists()
    capsys.readouterr()
    assert main(["cache", "--dir", str(tmp_path / "features")]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 3 and "SmallCNNEncoder" in lines[0] and "images from" in lines[0] and " MB " in lines[0]
    assert "2 feature caches" in lines[-1]
    assert main(["cache", "--dir", str(tmp_path / "features"), "--clear"]) == 0
    assert "removed 2 feature caches" in capsys.readouterr().out and not list((tmp_path / "features").iterdir())
