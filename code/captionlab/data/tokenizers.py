"""Caption tokenizers, chosen by name in ``data.tokenizer`` (Chinese ones register here later)."""
from __future__ import annotations

import re
from typing import Protocol

from ..registry import Registry


class Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: list[str]) -> str: ...


TOKENIZERS: Registry[type] = Registry("tokenizer")


@TOKENIZERS.register("en_word")
class EnglishWordTokenizer:
    """Lower-case words and numbers; punctuation dropped, as the PTB tokenizer does before scoring."""

    _word = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)


def build_tokenizer(name: str) -> Tokenizer:
    return TOKENIZERS.get(name)()
