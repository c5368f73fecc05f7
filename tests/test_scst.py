"""Self-critical training: the loss points the right way, the new baseline is centred, and a few
steps from a cross-entropy checkpoint raise the reward of the model's own samples."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from captionlab import decoding, load_checkpoint
from captionlab.config import load_config
from captionlab.data import load_dataset, load_image
from captionlab.errors import InputError
from captionlab.training.scst import Reward, SelfCriticalLoss, mean_of_others, parse_reward, policy_gradient_loss
from captionlab.training.trainer import train
from conftest import CONFIGS


def test_raising_a_positive_advantage_sample_lowers_the_loss():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-1.5, -0.5, -0.7]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    advantage = torch.tensor([0.8, -0.3])
    loss = policy_gradient_loss(logprobs, mask, advantage)
    loss.backward()
    assert (logprobs.grad[0, :2] < 0).all() and (logprobs.grad[1] > 0).all() and logprobs.grad[0, 2] == 0
    more_likely = logprobs.detach().clone()
    more_likely[0, :2] += 0.1  # the positive-advantage caption becomes more probable
    assert policy_gradient_loss(more_likely, mask, advantage) < loss


def test_new_baseline_advantage_sums_to_zero_per_image():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]])
    advantage = rewards - mean_of_others(rewards)
    assert torch.allclose(advantage.sum(1), torch.zeros(2), atol=1e-6)
    assert mean_of_others(rewards)[0, 0] == pytest.approx((2 + 3 + 6) / 3)


def test_reward_specs_and_bad_settings():
    assert parse_reward("CIDEr:1,Bleu_4:0.5") == {"CIDEr": 1.0, "Bleu_4": 0.5}
    with pytest.raises(ValueError, match="scst_samples >= 2"):
        SelfCriticalLoss(samples=1, baseline="mean")
    reward = Reward("CIDEr:1,Bleu_4:1", {0: ["a red circle on the left"], 1: ["two blue boxes"]})
    r = reward(["a red circle on the left", "a green star"], [0, 0])
    assert r[0] > r[1] >= 0


def test_the_cider_reward_uses_the_training_set_document_frequencies():
    """The reward's CIDEr-D is pycocoevalcap's with the document frequencies of every training image's
    references: scoring a caption for each training image with pycocoevalcap (whose df comes from the refs
    it is given: here exactly those) must give the same per-image values; scoring only two images must
    not (their own df differs), so a reward built on the batch's refs would fail."""
    from pycocoevalcap.cider.cider import Cider

    refs = {
        0: ["a red circle on the left", "a small red circle"],
        1: ["two blue squares", "a pair of blue boxes"],
        2: ["a green star in the middle", "one green star"],
        3: ["a red square on the right", "a large red box"],
    }
    reward = Reward("CIDEr", refs)
    cands = ["a red circle", "two blue boxes", "a green star", "a red box on the left"]
    ours = reward(cands, [0, 1, 2, 3])
    _, theirs = Cider().compute_score(refs, {i: [c] for i, c in enumerate(cands)})
    assert ours == pytest.approx(theirs, abs=1e-6)
    _, batch_only = Cider().compute_score({i: refs[i] for i in (0, 1)}, {i: [cands[i]] for i in (0, 1)})
    assert reward(cands[:2], [0, 1]) == pytest.approx(ours[:2], abs=1e-9)  # same df whatever the batch
    assert abs(batch_only[0] - ours[0]) > 1e-3


@pytest.mark.slow
def test_the_meteor_reward_ranks_a_matching_caption_first():
    reward = Reward("METEOR", {0: ["a red circle on the left"], 1: ["two blue boxes"]})
    exact, close, unrelated = reward(["a red circle on the left", "a red circle", "two blue boxes"], [0, 0, 0])
    assert exact > close > unrelated >= 0


def _mean_sample_reward(run_dir, records, seed=0):
    captioner = load_checkpoint(run_dir, "cpu")
    loss = SelfCriticalLoss(samples=4)
    loss.prepare(records, captioner.words)
    images = torch.stack([captioner.transform(load_image(r.path)) for r in records])
    with torch.no_grad():
        out = decoding.sample(captioner.model, images, 16, n=4, generator=torch.Generator().manual_seed(seed))
    return float(loss.reward(loss.words(out.tokens), [i for i in range(len(records)) for _ in range(4)]).mean())


def from_trained(trained, out, *extra: str):
    """tiny/scst.yaml from the session's tiny cross-entropy checkpoint, on its data, writing under ``out``."""
    cfg, result = trained
    common = [f"train.output_dir={out}", f"data.path={cfg.data.path}", f"train.init_from={result.run_dir / 'best.pt'}"]
    return load_config(CONFIGS / "tiny" / "scst.yaml", [*common, *extra])


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_a_few_scst_steps_raise_the_mean_sample_reward(trained, tmp_path, synth_root, baseline):
    _, result = trained
    scst = from_trained(trained, tmp_path, f"train.scst_baseline={baseline}", "train.lr=5e-4", "train.epochs=2",
                        f"train.run_name=scst_{baseline}")  # fmt: skip
    records = load_dataset(scst.data).split("train")
    before = _mean_sample_reward(result.run_dir / "best.pt", records[:64])
    out = train(scst, progress=False)
    after = _mean_sample_reward(out.run_dir / "last.pt", records[:64])
    assert after > before + 0.05, (before, after)
    rows = out.history
    assert rows[0]["epoch"] == 0 and {"reward", "baseline", "advantage_std", "sample_nll"} <= set(rows[1])
    ckpt = torch.load(out.run_dir / "last.pt", weights_only=True)
    assert ckpt["config"]["model"]["name"] == "cnn_gru" and ckpt["config"]["train"]["loss"] == "scst"


@pytest.mark.slow
def test_self_critical_training_resumes_exactly(trained, tmp_path):
    cfg, result = trained

    def scst(where, epochs):
        return load_config(
            CONFIGS / "tiny" / "scst.yaml",
            [
                f"train.output_dir={where}",
                f"data.path={tmp_path / 'data'}",
                "data.synthetic_n=40",
                "train.batch_size=8",
                f"train.init_from={result.run_dir / 'best.pt'}",
                f"train.epochs={epochs}",
            ],
        )

    # the tiny checkpoint's vocabulary is used as it is, whatever words this smaller set has
    straight = train(scst(tmp_path / "a", 2), progress=False)
    train(scst(tmp_path / "b", 1), progress=False)
    resumed = train(scst(tmp_path / "b", 2), resume=True, progress=False)
    a = torch.load(straight.run_dir / "last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6) for k in a["model"])
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]  # the start's row once, not again on resume


@pytest.mark.slow
def test_init_from_scores_its_start_and_keeps_it_while_no_epoch_beats_it(trained, tmp_path):
    """Epoch 0 of a ``train.init_from`` run is the checkpoint it starts from: logged with its val scores,
    and best.pt until an epoch beats it. A learning rate that wrecks the model in a step (as SCST on a
    few hundred photos can, more slowly) must hand back the start, not its least bad epoch."""
    _, result = trained
    scst = from_trained(trained, tmp_path, "train.lr=1.0", "train.epochs=1", "train.run_name=wrecked")
    out = train(scst, progress=False)
    assert [r["epoch"] for r in out.history] == [0, 1]
    start, wrecked = out.history
    assert start["CIDEr"] > 2 * wrecked["CIDEr"] and "train_loss" not in start
    assert {"train_loss", "reward", "baseline"} <= set(wrecked)  # log.csv widened after the val-only row
    assert out.best_epoch == 0 and out.best_metrics["CIDEr"] == start["CIDEr"]
    a = torch.load(result.run_dir / "best.pt", weights_only=True)
    b = torch.load(out.run_dir / "best.pt", weights_only=True)
    assert b["epoch"] == 0 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_init_from_checks_the_merged_config_before_any_data(trained, tmp_path):
    """The model section comes from the checkpoint: a data key the model depends on that differs, or a
    model key set here (which would be dropped), is one line naming both values, before any data is
    loaded (data.path does not exist here) or any run folder is made."""
    from captionlab.config import ConfigError

    _, result = trained
    common = [f"train.output_dir={tmp_path}", f"data.path={tmp_path / 'nowhere'}", "train.run_name=scst"]
    common.append(f"train.init_from={result.run_dir / 'best.pt'}")
    for override, message in [
        ("data.image_size=96", "data.image_size is 96 here but 64 in the train.init_from checkpoint"),
        ("data.max_caption_len=9", "data.max_caption_len is 9 here but"),
        ("model.hidden_dim=48", "model.*cannot be set here: model.hidden_dim=48 .the checkpoint's: "),
    ]:
        cfg = load_config(CONFIGS / "tiny" / "scst.yaml", [*common, override])
        with pytest.raises(ConfigError, match=message):
            train(cfg, progress=False)
        assert not (tmp_path / "scst").exists() and not (tmp_path / "nowhere").exists()
    cfg = load_config(CONFIGS / "tiny" / "scst.yaml", [*common, "train.fine_tune_from_epoch=1"])
    with pytest.raises(ConfigError, match="fine_tune_from_epoch needs a frozen"):  # the merged config's rules
        train(cfg, progress=False)


def test_the_shipped_scst_config_matches_the_checkpoint_it_starts_from():
    """code/configs/scst.yaml fine-tunes `make demo`'s CNN+GRU (demo/lite0_cnn_gru.yaml): it trained at
    96 px, and scst.yaml said 64."""
    from captionlab.config_rules import init_from_problems

    scst = load_config(CONFIGS / "scst.yaml")
    demo = load_config(CONFIGS / "demo" / "lite0_cnn_gru.yaml")
    assert scst.train.init_from.endswith(f"{demo.train.run_name}/best.pt")
    assert init_from_problems(scst, demo) == []


def spy_on_sampling(monkeypatch) -> dict:
    """The keyword arguments of the last ``decoding.sample`` call, which still samples."""
    seen: dict = {}
    real = decoding.sample

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "sample", spy)
    return seen


def test_scst_takes_its_gradient_under_the_distribution_it_samples(monkeypatch):
    from toy import MarkovCaptioner

    seen = spy_on_sampling(monkeypatch)
    loss = SelfCriticalLoss(samples=2, baseline="mean", temperature=2.0)
    records = [SimpleNamespace(captions=["3 4 2", "4 4 2"]) for _ in range(4)]
    loss.prepare(records, lambda tokens: [" ".join(map(str, row.tolist())) for row in tokens])
    value, stats = loss(MarkovCaptioner(seed=1), torch.arange(4).float().view(4, 1), None, torch.arange(4))
    assert seen["sampled_logprobs"] is True and "sample_nll" in stats and torch.isfinite(value)


def test_bad_endings_reach_the_captioner_and_the_scst_samples(trained, monkeypatch):
    """decode.bad_endings: a checkpoint's captions never end on a listed word (its greedy captions did),
    words outside the vocabulary are ignored, and SCST samples under the same ban."""
    cfg, result = trained
    records = load_dataset(cfg.data).split("train")[:24]
    images = [load_image(r.path) for r in records]
    plain = load_checkpoint(result.run_dir / "best.pt", "cpu")
    last = [c.split()[-1] for c in plain.caption(images, beam_size=1)]
    word = max(set(last), key=last.count)  # the word its captions end on most
    plain.config.decode.bad_endings = [word, "zebra-not-a-word"]
    barred = type(plain)(plain.model, plain.vocab, plain.config)
    assert barred.bad_endings.tolist() == [barred.vocab.stoi[word]]
    for k in (1, 3):
        assert all(c.split()[-1] != word for c in barred.caption(images, beam_size=k)), k
    seen = spy_on_sampling(monkeypatch)
    loss = SelfCriticalLoss(samples=2, baseline="greedy")
    loss.prepare(records[:4], barred.words, bad_endings=barred.bad_endings)
    batch = torch.stack([barred.transform(im) for im in images[:4]])
    loss(barred.model, batch, torch.zeros(4, 3, dtype=torch.long), torch.arange(4))
    assert torch.equal(seen["bad_endings"], barred.bad_endings)


def test_beam_candidates_are_the_beams_best_and_take_the_gradient(monkeypatch):
    """train.scst_candidates=beam: the captions rewarded are beam search's n best (a beam as wide as
    train.scst_samples), scored with gradients by teacher forcing; nothing is sampled."""
    model, images = _tiny_captioner(), torch.randn(4, 3, 32, 32)
    best3 = decoding.beam_search(model, images, 3, 16, keep_greedy=False, n_best=3)
    seen: list = []  # every batch of captions turned into words: the rewarded ones last

    def words(tokens: torch.Tensor) -> list[str]:
        seen.append(tokens)
        return [" ".join(map(str, r.tolist())) for r in tokens]

    records = [SimpleNamespace(captions=words(best3.tokens[3 * i : 3 * i + 1])) for i in range(4)]  # the 1st beam
    loss = SelfCriticalLoss(samples=3, baseline="mean", candidates="beam", max_len=16)
    loss.prepare(records, words)
    monkeypatch.setattr(decoding, "sample", lambda *a, **k: pytest.fail("beam candidates sample nothing"))
    value, stats = loss(model, images, None, torch.arange(4))
    assert torch.equal(seen[-1], best3.tokens) and torch.isfinite(value) and stats["advantage_std"] > 0
    value.backward()
    assert model.out.weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match="sample or beam"):
        SelfCriticalLoss(candidates="nucleus")


def _tiny_captioner():
    from captionlab.config import EncoderConfig, ModelConfig
    from captionlab.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="cnn_gru", encoder=EncoderConfig(name="resnet18", pretrained=False), embed_dim=16,
                      hidden_dim=24, dropout=0.0)  # fmt: skip
    return build_model(cfg, vocab_size=12).eval()


@pytest.mark.slow
@pytest.mark.parametrize("update, moves", [("output", ["out.bias", "out.weight"]), ("output_bias", ["out.bias"])])
def test_scst_update_moves_the_output_layer_alone(trained, tmp_path, update, moves):
    """train.scst_update=output (output_bias): after an epoch of beam SCST the output layer (its bias) has
    moved and every other weight is the start's, bit for bit (what the reward may change on few photos)."""
    _, result = trained
    scst = from_trained(trained, tmp_path, f"train.scst_update={update}", "train.scst_candidates=beam",
                        "train.scst_baseline=mean", "train.lr=1e-3", f"train.run_name={update}")  # fmt: skip
    out = train(scst, progress=False)
    a = torch.load(result.run_dir / "best.pt", weights_only=True)["model"]
    b = torch.load(out.run_dir / "last.pt", weights_only=True)["model"]
    assert sorted(k for k in a if not torch.equal(a[k], b[k])) == moves


def test_scst_settings_that_would_be_ignored_are_refused():
    from captionlab.config import ConfigError

    tiny = CONFIGS / "tiny" / "scst.yaml"
    for config, over, key in (
        (tiny, ["train.scst_candidates=beam", "train.scst_temperature=0.5"], "train.scst_temperature"),
        (tiny, ["train.scst_update=output", "train.fine_tune_from_epoch=2"], "train.fine_tune_from_epoch"),
        (CONFIGS / "tiny" / "cnn_gru.yaml", ["train.scst_update=output"], "train.scst_update"),  # xe
    ):
        with pytest.raises(ConfigError, match=key):
            load_config(config, over)
    assert load_config(tiny, ["train.scst_candidates=beam", "train.scst_update=output"]).train.scst_update == "output"
