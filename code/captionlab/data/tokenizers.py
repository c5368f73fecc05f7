"""Caption tokenizers, chosen by name in ``data.tokenizer``.

A tokenizer turns a caption into the units the vocabulary and the metrics count: English words, or
for Chinese single characters (``zh_char``) or jieba words (``zh_jieba``). Chinese captioning
benchmarks score space-joined tokens; ``detokenize`` gives the text a reader sees (no spaces).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from ..registry import Registry


class Tokenizer(Protocol):
    ptb_scoring: bool  # whether the metrics may run the PTB tokenizer on detokenised text

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: list[str]) -> str: ...


TOKENIZERS: Registry[type] = Registry("tokenizer")


@TOKENIZERS.register("en_word")
class EnglishWordTokenizer:
    """Lower-case words and numbers; punctuation dropped, as the PTB tokenizer does before scoring."""

    ptb_scoring = True
    _word = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)


_HAN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_LATIN = r"[a-z0-9]+"


def _join_zh(tokens: list[str]) -> str:
    """No spaces between Chinese tokens; one between two Latin ones ("t恤", "iphone 15")."""
    out = ""
    for t in tokens:
        if out and re.match(_LATIN, t) and re.search(r"[a-z0-9]$", out):
            out += " "
        out += t
    return out


@TOKENIZERS.register("zh_char")
class ChineseCharTokenizer:
    """One token per Chinese character, Latin letters/digits kept as words; punctuation and spaces dropped."""

    ptb_scoring = False
    _unit = re.compile(f"{_HAN}|{_LATIN}")

    def tokenize(self, text: str) -> list[str]:
        return self._unit.findall(text.lower())

    def detokenize(self, tokens: list[str]) -> str:
        return _join_zh(tokens)


@TOKENIZERS.register("zh_jieba")
class ChineseJiebaTokenizer:
    """jieba's word segmentation (precise mode); punctuation and spaces dropped."""

    ptb_scoring = False
    _keep = re.compile(f"(?:{_HAN}|{_LATIN})+")

    def __init__(self) -> None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # its dictionary-loading banner is noise in every log
        self._jieba = jieba

    def tokenize(self, text: str) -> list[str]:
        return [w for w in self._jieba.lcut(text.lower()) if self._keep.fullmatch(w)]

    def detokenize(self, tokens: list[str]) -> str:
        return _join_zh(tokens)


def metric_text(tokenizer: Tokenizer) -> Callable[[str], str] | None:
    """How metrics should see a caption written with ``tokenizer``: None for English (the metrics'
    own tokenisation applies), else its tokens joined by spaces, as Chinese benchmarks score."""
    return None if tokenizer.ptb_scoring else (lambda text: " ".join(tokenizer.tokenize(text)))


def build_tokenizer(name: str) -> Tokenizer:
    return TOKENIZERS.get(name)()
