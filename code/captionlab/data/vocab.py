"""Word <-> id mapping built from training captions; saved as a plain list inside checkpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ..errors import InputError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


class Vocabulary:
    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[:4]) != SPECIALS:
            raise InputError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise InputError("vocabulary has duplicate tokens")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, tokenized: Iterable[Sequence[str]], min_freq: int = 1) -> Vocabulary:
        """Words seen at least ``min_freq`` times, most frequent first (ties alphabetical: deterministic)."""
        counts = Counter(w for sent in tokenized for w in sent)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def encode(self, tokens: Sequence[str], max_len: int | None = None) -> list[int]:
        """``<start> w1 .. wn <end>`` with unknown words mapped to ``<unk>``; at most ``max_len`` words."""
        words = tokens[:max_len] if max_len is not None else tokens
        return [self.start_id, *(self.stoi.get(w, self.unk_id) for w in words), self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first ``<end>``; ``<start>``/``<pad>`` skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def to_list(self) -> list[str]:
        return list(self.itos)
