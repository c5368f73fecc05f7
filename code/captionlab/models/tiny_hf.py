"""Tiny random CLIP and GPT-2 models of the real classes, written with ``save_pretrained``: what
``captionlab tiny-hf`` writes, so ClipCap (and the tests and notebook 04) run offline through the same
loading path as real weights (``models/hf.py``). The GPT-2 is trained a little as a language model of
the captions, as a real one knows language before it meets an image."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import ExistsError, InputError
from ..hub import quiet
from ..optim import optimizer_step
from ..paths import resolve


def tiny_vision(hidden: int, layers: int, image_size: int, patch_size: int) -> dict[str, int | float]:
    """The sizes of every tiny ViT-style vision tower here (CLIP's, BLIP's, LLaVA's)."""
    return dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        initializer_range=0.02,  # BLIP's vision default (1e-10) would make every image look the same
    )


def save_tiny_clip(
    out: str | Path, image_size: int = 96, patch_size: int = 16, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """A random CLIPVisionModel of the real class, written with save_pretrained."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    quiet()
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(**tiny_vision(hidden, layers, image_size, patch_size), projection_dim=hidden)
    CLIPVisionModel(cfg).save_pretrained(out)
    return Path(out)


def save_tiny_gpt2(
    out: str | Path,
    texts: Iterable[str],
    chinese: bool = False,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    lm_steps: int = 200,
    vocab_size: int = 400,
) -> Path:
    """A tiny GPT2LMHeadModel with a tokenizer trained on ``texts``: byte-level BPE (GPT-2's kind), or
    for ``chinese`` a character vocabulary with a BERT-style tokenizer, as common Chinese GPT-2
    checkpoints have. Like a real GPT-2 it is a language model before it meets an image: ``lm_steps``
    steps of next-token training on ``texts`` alone (a frozen random LM could not be steered by
    ClipCap's prefix). Written with save_pretrained, as a real model directory is."""
    from transformers import GPT2Config, GPT2LMHeadModel

    quiet()
    texts = list(texts)
    tok = _bert_char_tokenizer(texts, Path(out)) if chinese else byte_bpe_tokenizer(texts, vocab_size)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=hidden,
        n_layer=layers,
        n_head=4,
        bos_token_id=bos,
        eos_token_id=eos,
    )
    model = GPT2LMHeadModel(cfg)
    train_language_model(model, [[bos, *tok.encode(t, add_special_tokens=False), eos] for t in texts], lm_steps, eos)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)


def train_language_model(model: Any, ids: list[list[int]], steps: int, pad: int, batch: int = 64) -> None:
    """Next-token training on token id lists (padding ignored by the loss)."""
    if steps <= 0 or not ids:
        return
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(ids), (batch,), generator=g).tolist()
        rows = [torch.tensor(ids[i][:128]) for i in pick]
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)  # (batch, T)
        labels = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-100)
        optimizer_step(model(input_ids=x, labels=labels).loss, opt, model.parameters())
    model.eval()


def save_tiny_clip_model(out: str | Path, texts: Iterable[str], image_size: int = 96, seed: int = 0) -> Path:
    """A random two-tower CLIPModel with its processor, for CLIPScore offline: the classes and layout of
    openai/clip-vit-base-patch32, tiny and untrained. Its tokenizer is CLIP's own class over a
    character vocabulary of ``texts`` (CLIP's "</w>" word ends, no merges)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    quiet()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted({c for t in ["a photo depicts", *texts] for c in t.lower() if not c.isspace()}):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(seed)
    text = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=16,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    CLIPModel(config).save_pretrained(out)
    size = {"height": image_size, "width": image_size}
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=size), tokenizer=tok
    ).save_pretrained(out)
    return Path(out)


def byte_bpe_tokenizer(texts: list[str], vocab_size: int = 400) -> Any:
    """GPT-2's kind of tokenizer trained on ``texts``: 400 pieces suit the tests' tiny captions; a real
    caption set wants a few thousand, so that most words are one token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def _bert_char_tokenizer(texts: list[str], out: Path) -> Any:
    from transformers import BertTokenizerFast

    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=True, tokenize_chinese_chars=True)


def write_tiny_models(
    cfg: Any, overwrite: bool = False, hidden: int = 64, layers: int = 2, lm_steps: int = 200, vocab_size: int = 400
) -> tuple[Path | None, Path]:
    """Random stand-ins at a config's ``model.clip`` and ``model.lm``, the GPT-2 tokenizer trained on
    its training captions (``captionlab tiny-hf``): ClipCap runs offline end to end, with the very
    classes and loading path real checkpoints use. Chinese data gets a BERT-style character tokenizer.
    A config whose image tower is a ``captionlab pretrain`` checkpoint (``model.pretrained_from``) gets
    the language model alone; ``hidden``, ``layers``, ``lm_steps`` and ``vocab_size`` (BPE pieces) size it."""
    from ..data.adapters import load_dataset
    from ..data.tokenizers import build_tokenizer

    m = cfg.model
    if not m.lm or not (m.clip or m.pretrained_from):
        raise InputError("the config sets no model.clip / model.lm directories to write the tiny models to")
    clip, lm = (resolve(m.clip) if m.clip else None), resolve(m.lm)
    for p in (clip, lm):
        if p is not None and p.exists() and not overwrite:
            raise ExistsError(f"{p} already exists; pass --overwrite to replace it with a tiny stand-in")
    words = build_tokenizer(cfg.data.tokenizer)
    train = load_dataset(cfg.data, ("train",)).split("train")
    texts = [words.detokenize(words.tokenize(c)) for r in train for c in r.captions]
    if clip is not None:
        save_tiny_clip(clip, image_size=cfg.data.image_size)
    save_tiny_gpt2(lm, texts, not words.ptb_scoring, hidden, layers, lm_steps=lm_steps, vocab_size=vocab_size)
    return clip, lm
