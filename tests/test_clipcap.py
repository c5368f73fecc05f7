"""ClipCap on tiny random CLIP / GPT-2 models of the real classes, saved with save_pretrained and
loaded back through the path real weights take; its text goes through GPT-2's own tokenizer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from captionlab import decoding
from captionlab.captioner import load_checkpoint
from captionlab.cli import main
from captionlab.config import ModelConfig
from captionlab.data.adapters import load_dataset
from captionlab.data.lm_vocab import SHIFT, LMVocabulary, load_vocab
from captionlab.data.tokenizers import build_tokenizer
from captionlab.errors import InputError
from captionlab.models import build_model
from captionlab.models.clipcap import CLIP_MEAN, CLIP_STD
from captionlab.models.encoders import MissingWeightsError
from captionlab.models.hf import cache_to_state, state_to_cache
from captionlab.models.tiny_hf import save_tiny_gpt2
from conftest import clipcap_config

CAPTION = "a big red circle at the top left"


def model_for(hf, **kw):
    vocab = LMVocabulary.from_dir(hf / "gpt2", "en_word")
    cfg = ModelConfig(
        name="clipcap", clip=str(hf / "clip"), lm=str(hf / "gpt2"), prefix_len=3, num_heads=4, mapper_layers=2, **kw
    )
    torch.manual_seed(0)
    return build_model(cfg, len(vocab), vocab=vocab).eval(), vocab


def test_lm_vocabulary_round_trip_and_shift(tiny_hf):
    vocab = LMVocabulary.from_dir(tiny_hf / "gpt2", "en_word")
    ids = vocab.encode(build_tokenizer("en_word").tokenize(CAPTION))
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id and min(ids[1:-1]) >= SHIFT
    assert vocab.decode(ids[1:]) == CAPTION.split()
    assert load_vocab(vocab.to_list()) == vocab  # what the checkpoint keeps rebuilds the same tokenizer
    lm = vocab.lm_ids(torch.tensor(ids))
    assert lm[0] == vocab.lm_bos and lm[-1] == vocab.lm_eos
    scores = vocab.from_lm_logits(torch.randn(2, vocab.lm_size))
    assert scores.shape == (2, len(vocab)) and torch.isinf(scores[:, :SHIFT]).sum() == 2 * (SHIFT - 1)
    assert torch.isinf(scores[:, SHIFT + vocab.lm_eos]).all()  # the LM's eos is <end>, once


@pytest.mark.parametrize("kw", [{"mapper": "mlp"}, {"mapper": "transformer", "lm_frozen": True}])
def test_cached_steps_equal_teacher_forcing(tiny_hf, kw):
    model, vocab = model_for(tiny_hf, **kw)
    ids = vocab.encode(CAPTION.split())
    caps = torch.tensor([ids] * 4)  # two images, two captions each
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        full = torch.log_softmax(model(images, caps).float(), -1)
        state = model.expand_for(model.init_state(images), caps)
        steps = []
        for t in range(caps.size(1) - 1):
            lp, state = model.step(caps[:, t], state)
            steps.append(lp)
    stepped = torch.stack(steps, 1)
    finite = torch.isfinite(full)
    assert torch.equal(finite, torch.isfinite(stepped))
    assert (stepped[finite] - full[finite]).abs().max() < 1e-5
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({"mapper"} if kw.get("lm_frozen") else {"mapper", "lm"})  # CLIP is always frozen


def test_cache_conversion_round_trip(tiny_hf):
    model, _ = model_for(tiny_hf)
    out = model.lm(inputs_embeds=torch.randn(3, 4, model.lm.config.n_embd), use_cache=True)
    state = cache_to_state(out.cache)
    assert state["lm_k0"].shape[:3] == (3, 4, 4)  # batch-first: (rows, heads, t, head_dim)
    again = cache_to_state(state_to_cache(state, model.lm_layers))
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_batched_beam_equals_one_image_at_a_time(tiny_hf):
    model, _ = model_for(tiny_hf)
    images = torch.randn(3, 3, 96, 96)
    batched = decoding.beam_search(model, images, beam_size=3, max_len=8)
    for i in range(3):
        one = decoding.beam_search(model, images[i : i + 1], beam_size=3, max_len=8)
        assert torch.equal(batched.tokens[i, : one.tokens.size(1)], one.tokens[0])


def test_missing_directory_is_named(tiny_hf, tmp_path):
    vocab = LMVocabulary.from_dir(tiny_hf / "gpt2", "en_word")
    cfg = ModelConfig(name="clipcap", clip=str(tmp_path / "no_clip"), lm=str(tiny_hf / "gpt2"))
    with pytest.raises(MissingWeightsError, match="model.clip: directory not found: .*no_clip"):
        build_model(cfg, len(vocab), vocab=vocab)
    with pytest.raises(MissingWeightsError, match="model.lm: directory not found"):
        LMVocabulary.from_dir(tmp_path / "no_lm", "en_word")


def test_trained_clipcap_captions_from_the_checkpoint_alone(trained_clipcap, tmp_path, monkeypatch):
    cfg, result = trained_clipcap
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    moved = tmp_path / "ckpt.pt"
    shutil.copy(result.run_dir / "best.pt", moved)

    def no_directories(*args):
        raise AssertionError("a checkpoint must not read model.clip / model.lm")

    dataset = load_dataset(cfg.data)
    images = [r.path for r in dataset.split("test")[:6]]
    before = load_checkpoint(result.run_dir / "best.pt", "cpu").caption(images)
    monkeypatch.setattr("captionlab.models.hf.require_dir", no_directories)
    captioner = load_checkpoint(moved, "cpu")
    assert isinstance(captioner.vocab, LMVocabulary)
    assert captioner.caption(images) == before  # the moved file alone gives the same captions
    words = {w for r in dataset.split("train") for c in r.captions for w in c.lower().rstrip(".").split()}
    assert all(c and set(c.split()) <= words for c in before), before  # GPT-2 tokens decode to the data's words
    captioner.config.decode.bad_endings = ["a"]  # words, and GPT-2 writes pieces: refused in one line
    with pytest.raises(InputError, match="decode.bad_endings lists words"):
        type(captioner)(captioner.model, captioner.vocab, captioner.config)


def test_transformer_recipe_trains_from_the_cli(tiny_hf, synth_root, tmp_path, capsys):
    cfg = clipcap_config("clipcap_transformer.yaml", tmp_path, tiny_hf, synth_root / "tiny")
    overrides = [
        f"train.output_dir={cfg.train.output_dir}",
        f"data.path={cfg.data.path}",
        f"model.clip={cfg.model.clip}",
        f"model.lm={cfg.model.lm}",
        "train.epochs=2",
        "--no-progress",
    ]
    assert main(["train", "code/configs/tiny/clipcap_transformer.yaml", *overrides]) == 0
    run = tmp_path / "runs" / "tiny_clipcap_transformer"
    assert (
        main(["evaluate", str(run / "best.pt"), "--metrics", "Bleu,CIDEr", "--tokenizer", "simple", "--no-progress"])
        == 0
    )
    assert "CIDEr" in capsys.readouterr().out
    results = json.loads((run / "eval_test_beam3" / "results.json").read_text())
    assert all(r["caption"] for r in results)  # the frozen GPT-2, steered by the mapper alone, writes captions


def test_chinese_gpt2_with_a_bert_tokenizer(tmp_path, tiny_hf):
    texts = ["图片左上角有一个大的红色圆形", "两个蓝色的方块", "一个小的绿色星形在左侧"]
    save_tiny_gpt2(tmp_path / "gpt2_zh", texts, chinese=True)
    vocab = LMVocabulary.from_dir(tmp_path / "gpt2_zh", "zh_char")
    assert type(vocab.hf).__name__.startswith("BertTokenizer")
    ids = vocab.encode(build_tokenizer("zh_char").tokenize(texts[0]))
    assert "".join(vocab.decode(ids[1:])) == texts[0]  # [CLS]/[SEP] become <start>/<end>
    assert {vocab.hf.cls_token_id, vocab.hf.pad_token_id} <= set(vocab.banned)
    cfg = ModelConfig(name="clipcap", clip=str(tiny_hf / "clip"), lm=str(tmp_path / "gpt2_zh"), prefix_len=2)
    model = build_model(cfg, len(vocab), vocab=vocab)
    caps = torch.tensor([ids])
    loss0 = None
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):  # it can learn the one caption, through the BERT-style ids
        logits = model(torch.zeros(1, 3, 96, 96), caps)
        loss = torch.nn.functional.cross_entropy(logits[0], caps[0, 1:])
        loss0 = loss0 if loss0 is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = decoding.greedy(model.eval(), torch.zeros(1, 3, 96, 96), max_len=20)
    assert float(loss.detach()) < loss0 / 4
    assert build_tokenizer("zh_char").detokenize(vocab.decode(out.tokens[0].tolist())) == texts[0]


def tower_overrides(pretrained, tiny_hf, synth_root, *extra: str) -> list[str]:
    """ClipCap reading images through the tiny pre-training's image tower (no CLIP: flickr8k_clipcap.yaml's way)."""
    tower = pretrained[0].model
    return [
        "model.clip=null",
        f"model.pretrained_from={pretrained[1].run_dir / 'best.pt'}",
        f"model.encoder.name={tower.encoder.name}",
        "model.encoder.pretrained=false",
        f"model.grid_size={tower.grid_size}",
        f"model.embed_dim={tower.embed_dim}",
        f"model.lm={tiny_hf / 'gpt2'}",
        f"data.path={synth_root / 'tiny'}",
        *extra,
    ]


def test_clipcap_reads_images_through_a_pretrained_tower_kept_frozen(pretrained, tiny_hf, synth_root, tmp_path):
    """model.pretrained_from in place of model.clip: the tower's encoder and projection are copied from the
    pre-training checkpoint, stay as they were through training (frozen, as CLIP is), and the trained
    checkpoint captions on its own (no CLIP directory, the tower's normalisation)."""
    from captionlab.checkpoint import read_checkpoint
    from captionlab.config import load_config
    from captionlab.training.trainer import train
    from conftest import CONFIGS

    over = tower_overrides(pretrained, tiny_hf, synth_root, f"train.output_dir={tmp_path}", "train.epochs=2")
    result = train(load_config(CONFIGS / "tiny" / "clipcap_mlp.yaml", over), progress=False)
    tower = read_checkpoint(pretrained[1].run_dir / "best.pt")["model"]
    ckpt = read_checkpoint(result.run_dir / "best.pt")
    mine = ckpt["model"]
    copied = [k for k in tower if k.startswith("encoder.")]
    assert copied and all(torch.equal(mine[k], tower[k]) for k in copied)
    assert torch.equal(mine["tower_proj.weight"], tower["image_proj.weight"])
    assert "clip_config" not in ckpt["assets"]
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    assert captioner.model.image_norm == captioner.model.encoder.norm != (CLIP_MEAN, CLIP_STD)
    image = load_dataset(load_config(CONFIGS / "tiny" / "clipcap_mlp.yaml", over).data).split("val")[0].path
    assert captioner.caption(str(image))[0].strip()


def test_clipcap_needs_clip_or_a_tower_and_the_tower_shape_it_was_given(pretrained, tiny_hf, synth_root):
    from captionlab.config import ConfigError, load_config
    from captionlab.errors import InputError
    from captionlab.training.factory import new_model, pretrain_start
    from captionlab.training.setup import build_vocab
    from conftest import CONFIGS

    path = CONFIGS / "tiny" / "clipcap_mlp.yaml"
    with pytest.raises(ConfigError, match="model.clip .* or model.pretrained_from"):
        load_config(path, ["model.clip=null", f"model.lm={tiny_hf / 'gpt2'}"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(path, tower_overrides(pretrained, tiny_hf, synth_root, f"model.clip={tiny_hf / 'clip'}"))
    cfg = load_config(path, tower_overrides(pretrained, tiny_hf, synth_root))
    cfg.model.grid_size += 1
    vocab = build_vocab(cfg, load_dataset(cfg.data))
    with pytest.raises(InputError, match="model.grid_size"):
        new_model(cfg.model, vocab, pretrain_start(cfg.model))
