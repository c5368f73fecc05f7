"""A language model's own tokenizer, seen through the ``Vocabulary`` interface (ClipCap's GPT-2).

Caption models, the loss, batching and the decoding engine count on ids 0-3 being <pad>, <start>,
<end>, <unk>. Here the language model's ids are shifted up by four, so all of that holds unchanged;
the model maps <start>/<end> to the LM's own begin/end tokens (``lm_ids``, ``from_lm_logits``).

The tokenizer's files travel inside the checkpoint (``to_list``), so a checkpoint captions with no
other file. Text reaches the LM as the data tokenizer's detokenised words (lower case, no
punctuation), and comes back as words through the same tokenizer: metrics still count words.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .tokenizers import Tokenizer, build_tokenizer
from .vocab import SPECIALS, Vocabulary

SHIFT = len(SPECIALS)
KIND = "hf-tokenizer"


def _is_lm_saved(saved: Any) -> bool:
    return isinstance(saved, dict) and saved.get("kind") == KIND


def load_vocab(saved: Any) -> Vocabulary | LMVocabulary:
    """What a checkpoint's ``vocab`` entry holds: a word list, or a language model's tokenizer files."""
    return LMVocabulary.from_saved(saved) if _is_lm_saved(saved) else Vocabulary(saved)


class LMVocabulary:
    pad_id, start_id, end_id, unk_id = Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.end_id, Vocabulary.unk_id

    def __init__(self, hf_tokenizer: Any, words: str, files: dict[str, str]) -> None:
        self.hf = hf_tokenizer
        self.word_tokenizer_name = words
        self.words: Tokenizer = build_tokenizer(words)
        self.files = files
        bos = hf_tokenizer.bos_token_id if hf_tokenizer.bos_token_id is not None else hf_tokenizer.cls_token_id
        eos = hf_tokenizer.eos_token_id if hf_tokenizer.eos_token_id is not None else hf_tokenizer.sep_token_id
        if bos is None or eos is None:
            raise InputError(
                "the language model's tokenizer has neither bos/eos nor cls/sep tokens to start and end a caption with"
            )
        self.lm_bos, self.lm_eos = int(bos), int(eos)
        self.lm_size = len(hf_tokenizer)
        # special tokens other than <end> are never emitted (GPT-2 has one; BERT-style ones have [PAD], [CLS]...)
        self.banned = sorted({int(i) for i in hf_tokenizer.all_special_ids} | {self.lm_eos})

    @classmethod
    def from_dir(cls, path: str | Path, words: str) -> LMVocabulary:
        from transformers import AutoTokenizer

        from ..hub import quiet, require_dir

        quiet()
        tok = AutoTokenizer.from_pretrained(str(require_dir(path, "model.lm")), local_files_only=True)
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            files = {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        return cls(tok, words, files)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> LMVocabulary:
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            for name, text in saved["files"].items():
                (Path(tmp) / name).write_text(text, encoding="utf-8")
            tok = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
        return cls(tok, saved["words"], dict(saved["files"]))

    def to_list(self) -> dict[str, Any]:
        """What the checkpoint keeps (the name is ``Vocabulary``'s): the tokenizer's files as text."""
        return {"kind": KIND, "words": self.word_tokenizer_name, "files": dict(self.files)}

    def __len__(self) -> int:
        return self.lm_size + SHIFT

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LMVocabulary) and self.to_list() == other.to_list()

    def encode(self, tokens: Sequence[str], max_len: int | None = None) -> list[int]:
        """Words (from the data tokenizer) -> ``<start> lm-ids.. <end>`` in shifted ids."""
        words = list(tokens[:max_len] if max_len is not None else tokens)
        ids = self.hf.encode(self.words.detokenize(words), add_special_tokens=False)
        return [self.start_id, *(i + SHIFT for i in ids), self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Shifted ids up to <end> -> the data tokenizer's words of the LM's text."""
        lm = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i >= SHIFT:
                lm.append(i - SHIFT)
        return self.words.tokenize(self.hf.decode(lm, skip_special_tokens=True))

    # ---- the model's side of the shift

    def lm_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Shifted ids -> LM ids: <start> -> bos, <end> -> eos, <pad>/<unk> -> eos (never a target)."""
        start = torch.full_like(ids, self.lm_bos)
        return torch.where(ids >= SHIFT, ids - SHIFT, torch.where(ids == self.start_id, start, self.lm_eos))

    def from_lm_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """LM scores (..., lm_size) -> (..., lm_size + 4): <end> takes eos's score; specials can't be emitted."""
        return from_lm_logits(logits, self.lm_eos, self.banned)


def from_lm_logits(logits: torch.Tensor, eos: int, banned: Sequence[int]) -> torch.Tensor:
    head = logits.new_full((*logits.shape[:-1], SHIFT), float("-inf"))
    head[..., Vocabulary.end_id] = logits[..., eos]
    out = torch.cat([head, logits], -1)
    out[..., [SHIFT + b for b in banned]] = float("-inf")
    return out
