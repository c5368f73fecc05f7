"""Caption tokenizers, chosen by name in ``data.tokenizer``.

A tokenizer turns a caption into the units the vocabulary and the metrics count: English words, or
for Chinese single characters (``zh_char``) or jieba words (``zh_jieba``). English words are the
PTB tokenizer's, as pycocoevalcap scores them ("t-shirt" one word, "dog's" -> "dog 's"), so a model
can write every reference token and training, the SCST reward, validation and ``evaluate`` count the
same units (``scoring_text``). Chinese captioning benchmarks score space-joined tokens; ``detokenize``
gives the text a reader sees (no spaces).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from ..registry import Registry
from .ptb import ptb_tokenize


class Tokenizer(Protocol):
    ptb_scoring: bool  # whether the metrics may run the PTB tokenizer on detokenised text

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: list[str]) -> str: ...


TOKENIZERS: Registry[type] = Registry("tokenizer")


@TOKENIZERS.register("en_word")
class EnglishWordTokenizer:
    """pycocoevalcap's tokens: the PTB tokenizer's, lower case, its punctuation tokens dropped."""

    ptb_scoring = True
    # split-off clitics written back onto their word for the reader; the PTB tokenizer splits them again
    _clitics = frozenset(["'s", "'m", "'d", "'re", "'ve", "'ll", "n't"])

    _ampersand = re.compile(r"[a-z]+(?:&[a-z]+)+")
    _word = re.compile(r"[^\W_]+(?:-[^\W_]+)*")  # letters and digits, hyphen-joined: "dog", "t-shirt"

    def tokenize(self, text: str) -> list[str]:
        tokens = ptb_tokenize(text).split()
        for _ in range(3):  # rare tokens no written caption gives back ("``''" from touching quotes) are
            back = ptb_tokenize(self.detokenize(tokens)).split()  # replaced by what the written caption gives
            if back == tokens:  # (every Flickr8k caption is its own fixed point: tests/test_scoring_tokens.py)
                break
            tokens = back
        return tokens

    def detokenize(self, tokens: list[str]) -> str:
        """Text the PTB tokenizer splits back into ``tokens``, written for a reader ("a dog's t-shirt")."""
        out: list[str] = []
        for t in tokens:
            if out and (self._clitic_of(out[-1], t) or self._opens(out[-1], t)):
                out[-1] += t  # "dog" "'s" -> "dog's", "do" "n't" -> "don't", "'t" "is" -> "'tis", "y'" "all"
            else:
                out.append(t.upper() if self._ampersand.fullmatch(t) else t)  # only "Q&A" stays one token
        return " ".join(out)

    def _clitic_of(self, before: str, token: str) -> bool:
        """Whether ``token`` is a clitic the PTB tokenizer splits off ``before`` again once written onto it."""
        if token == "n't":
            return before.isalpha()  # "do" -> "don't"; not after "'s" or "q&a"
        return token in self._clitics and self._word.fullmatch(before) is not None

    @staticmethod
    def _opens(before: str, token: str) -> bool:
        """Whether ``before`` is the first piece of a word the PTB tokenizer split: "'tis", "y'all"."""
        if before == "'t":
            return token in ("is", "was")
        return len(before) == 2 and before[1] == "'" and before[0].isalpha()


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


def scoring_text(tokenizer: Tokenizer) -> Callable[[str], str]:
    """A caption -> the tokens the scorer counts, space-joined: for English the PTB tokenizer's (what
    pycocoevalcap's Java tokenizer gives, in-process), for Chinese the tokenizer's own, as Chinese
    benchmarks score. The SCST reward, the nearest-neighbour consensus and validation read captions so."""
    return lambda text: " ".join(tokenizer.tokenize(text))


def build_tokenizer(name: str) -> Tokenizer:
    return TOKENIZERS.get(name)()
