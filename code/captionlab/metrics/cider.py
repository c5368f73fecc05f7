"""CIDEr-D in-process and vectorised: exactly pycocoevalcap's ``Cider`` (sigma 6, clipped counts, x10,
idf = log(#images) - log(max(1, df))), in numpy with no Python loop over n-grams or image pairs.

Fast enough to be the reward of self-critical training, where the document frequencies come from
the training references once (``DocumentFrequency``) as the research code does; with ``df=None``
they come from the references given, as pycocoevalcap does.

Quirks kept for exactness: the length in the Gaussian penalty is the number of bigrams (pycocoevalcap
counts ``len(ngram) - 1 == 1``), and a reference or candidate whose tf-idf vector is all zeros
contributes 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

N = 4
SIGMA = 6.0


def _ids(sentences: Sequence[str], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-split sentences -> one flat array of word ids with a 0 between sentences, and the
    sentence lengths (S,); new words extend ``vocab``. One ``split`` of the joined text."""
    joined = " \0 ".join(sentences)
    if joined.count("\0") != max(len(sentences) - 1, 0):  # a NUL inside a caption: split one by one
        split = [s.split() for s in sentences]
        words = list(itertools.chain.from_iterable(w + ["\0"] for w in split))[:-1] if split else []
    else:
        words = joined.split()
    for w in sorted(set(words).difference(vocab).difference({"\0"})):  # sorted: same ids, same sums, every run
        vocab[w] = len(vocab) + 1
    lookup = {**vocab, "\0": 0}
    flat = np.fromiter(map(lookup.__getitem__, words), dtype=np.int64, count=len(words))
    bounds = np.concatenate([[-1], np.flatnonzero(flat == 0), [len(flat)]])
    return flat, np.diff(bounds) - 1


def _fits(base: int, n: int) -> bool:
    """Whether n-gram keys ``w1 * base**(n-1) + ... + wn`` fit in 64 bits (a vocabulary under 46,341
    words for 4-grams); past that, keys are renumbered and hold only within one call (``_ngram_keys``)."""
    return base**n < 2**62


def _ngram_keys(flat: np.ndarray, n: int, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All n-grams of every sentence as integer keys: (sentence index, key, start position) per
    occurrence, in sentence order. A window that holds a separator (id 0) crosses sentences and is
    dropped. Where ``base ** n`` overflows 64 bits the (k)-gram keys are renumbered at each step
    (dense, so ``key * base`` stays small): equal n-grams still get equal keys, within this call."""
    width = len(flat) - n + 1
    if width <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    key = flat[:width].copy()
    for k in range(1, n):
        key = key * base + flat[k : k + width]
        if not _fits(base, n):
            key = _unique(key)[1]  # dense ids of the (k+1)-grams
    is_sep = flat == 0
    seps = np.concatenate([[0], np.cumsum(is_sep)])  # separators before each position
    valid = seps[n : n + width] == seps[:width]  # no separator inside the window
    return seps[:width][valid], key[valid], np.flatnonzero(valid)


def _rows(flat: np.ndarray, start: np.ndarray, n: int) -> np.ndarray:
    """The word ids of the n-grams starting at ``start``: (len(start), n)."""
    return flat[start[:, None] + np.arange(n)] if start.size else np.empty((0, n), np.int64)


@dataclass
class DocumentFrequency:
    """n-gram document frequencies of a reference corpus, computed once (e.g. the training split)."""

    vocab: dict[str, int]
    ngrams: list[np.ndarray]  # per n: (K_n, n) word ids of each n-gram
    counts: list[np.ndarray]  # per n: (K_n,) number of images whose references contain it
    n_images: int
    _hashed: dict = field(default_factory=dict, repr=False)  # (n, base) -> sorted keys, counts

    @classmethod
    def from_references(cls, references: Mapping[Any, Sequence[str]]) -> DocumentFrequency:
        vocab: dict[str, int] = {}
        refs = [r for rs in references.values() for r in rs]
        image = np.repeat(np.arange(len(references)), [len(rs) for rs in references.values()])
        ids, _ = _ids(refs, vocab)
        base = len(vocab) + 1
        ngrams, counts = [], []
        for n in range(1, N + 1):
            sent, key, start = _ngram_keys(ids, n, base)
            pairs = np.unique(np.stack([key, image[sent]], 1), axis=0) if key.size else np.empty((0, 2), np.int64)
            _, df = np.unique(pairs[:, 0], return_counts=True)
            first = np.unique(key, return_index=True)[1]  # one occurrence of each n-gram, in key order
            ngrams.append(_rows(ids, start[first], n))
            counts.append(df)
        return cls(vocab, ngrams, counts, len(references))

    def lookup_rows(self, rows: np.ndarray, n: int) -> np.ndarray:
        """Document frequency of each n-gram given as word ids (k, n), by exact row match: for
        vocabularies whose n-gram keys do not fit in 64 bits (``lookup`` is the fast path)."""
        table = self.ngrams[n - 1]
        if table.size == 0 or rows.size == 0:
            return np.zeros(len(rows), np.float64)
        inverse = np.unique(np.concatenate([table, rows]), axis=0, return_inverse=True)[1].reshape(-1)
        df = np.zeros(int(inverse.max()) + 1, np.float64)
        df[inverse[: len(table)]] = self.counts[n - 1]
        return df[inverse[len(table) :]]

    def lookup(self, key: np.ndarray, n: int, base: int) -> np.ndarray:
        """Document frequency of each n-gram key (hashed with ``base``); 0 for unseen n-grams."""
        table = self.ngrams[n - 1]
        if table.size == 0 or key.size == 0:
            return np.zeros(key.shape, np.float64)
        if (n, base) not in self._hashed:  # rebuilt only when a call brings words the corpus lacked
            hashed = table[:, 0].copy()
            for k in range(1, n):
                hashed = hashed * base + table[:, k]
            order = np.argsort(hashed)
            self._hashed = {k: v for k, v in self._hashed.items() if k[1] == base}
            self._hashed[n, base] = (hashed[order], self.counts[n - 1][order])
        hashed, df = self._hashed[n, base]
        pos = np.minimum(np.searchsorted(hashed, key), len(hashed) - 1)
        return np.where(hashed[pos] == key, df[pos], 0).astype(np.float64)


def cider_d(
    candidates: Mapping[Any, Sequence[str]],
    references: Mapping[Any, Sequence[str]],
    df: DocumentFrequency | None = None,
    sigma: float = SIGMA,
) -> tuple[float, np.ndarray]:
    """pycocoevalcap ``Cider().compute_score(references, candidates)``, vectorised.

    ``candidates``: image id -> ``[tokenised caption]``; ``references``: image id -> tokenised
    references (the same keys). Returns ``(corpus_score, per_image_scores)``, per-image scores in
    ``candidates``' key order.
    """
    keys = _checked_keys(candidates, references)
    n_img = len(keys)
    n_refs = np.array([len(references[k]) for k in keys])
    ref_image = np.repeat(np.arange(n_img), n_refs)  # (R,)
    vocab: dict[str, int] = dict(df.vocab) if df is not None else {}
    # one matrix: candidates are rows 0..n_img-1 (row = image), the references follow
    ids, lengths = _ids([candidates[k][0] for k in keys] + [r for k in keys for r in references[k]], vocab)
    base = len(vocab) + 1
    log_n = np.log(float(df.n_images if df is not None else n_img))
    bigrams = np.maximum(lengths - 1, 0)
    bigrams_c, bigrams_r = bigrams[:n_img], bigrams[n_img:]
    penalty = np.exp(-((bigrams_c[ref_image] - bigrams_r) ** 2) / (2 * sigma**2))  # (R,)
    total = np.zeros(len(ref_image))  # (R,) summed over n
    n_refs_total = len(ref_image)
    rows = n_img + n_refs_total
    for n in range(1, N + 1):
        row, key, start = _ngram_keys(ids, n, base)
        if key.size == 0:
            continue
        if _fits(base, n) and base**n * rows < 2**62:  # the n-gram key itself can carry the row index
            code, raw = key, None
        else:  # 4-grams of a large vocabulary: renumber the distinct n-grams first
            raw, code, _ = _unique(key)
        tf, gram, row, new_gram = _group(code, row, rows)
        gi = np.cumsum(new_gram) - 1  # n-gram index of each entry
        is_ref = row >= n_img
        if df is None:  # document frequency: distinct images whose references hold the n-gram
            image = np.where(is_ref, ref_image[np.maximum(row - n_img, 0)], row)
            same_doc = np.zeros(len(row), dtype=bool)
            same_doc[1:] = (gi[1:] == gi[:-1]) & (image[1:] == image[:-1]) & is_ref[:-1]
            doc_freq = np.bincount(gi, is_ref & ~same_doc, minlength=int(gi[-1]) + 1).astype(np.float64)
        else:
            grams = gram[new_gram]
            keys_of = grams if raw is None else raw[grams]  # each distinct n-gram's key
            if _fits(base, n):
                doc_freq = df.lookup(keys_of, n, base)
            else:  # keys renumbered within this call: match the n-grams' words against the corpus'
                uniq, first = np.unique(key, return_index=True)
                doc_freq = df.lookup_rows(_rows(ids, start[first[np.searchsorted(uniq, keys_of)]], n), n)
        w = tf * (log_n - np.log(np.maximum(1.0, doc_freq)))[gi]  # tf-idf weight of each entry
        c_rows, r_rows = row[~is_ref], row[is_ref] - n_img
        c_w, r_w = w[~is_ref], w[is_ref]
        c_norm = np.sqrt(np.bincount(c_rows, c_w**2, minlength=n_img))  # (images,)
        r_norm = np.sqrt(np.bincount(r_rows, r_w**2, minlength=n_refs_total))  # (R,)
        # each reference n-gram meets the candidate's weight for the same (n-gram, image): sorted keys
        matched_w = _find(gi[~is_ref] * n_img + c_rows, c_w, gi[is_ref] * n_img + ref_image[r_rows])
        val = np.bincount(r_rows, np.minimum(matched_w, r_w) * r_w, minlength=n_refs_total).astype(np.float64)
        denom = c_norm[ref_image] * r_norm
        val = np.divide(val, denom, out=np.zeros_like(val), where=denom != 0)
        total += val * penalty
    per_image = 10.0 * np.bincount(ref_image, total / N, minlength=n_img) / n_refs
    return float(per_image.mean()) if n_img else 0.0, per_image


def _checked_keys(candidates: Mapping[Any, Sequence[str]], references: Mapping[Any, Sequence[str]]) -> list:
    keys = list(candidates)
    if set(keys) != set(references):
        raise InputError("candidates and references must have the same image ids")
    for k in keys:
        if len(candidates[k]) != 1:
            raise InputError(f"image {k!r}: expected exactly one candidate caption, got {len(candidates[k])}")
        if not references[k]:
            raise InputError(f"image {k!r}: no references")
    return keys


def _group(code: np.ndarray, row: np.ndarray, rows: int) -> tuple[np.ndarray, ...]:
    """One sort groups every occurrence by (n-gram, row), rows of one n-gram then in row order.
    Returns per (n-gram, row) entry: its term frequency, n-gram code, row, and whether it is the
    n-gram's first entry."""
    packed = np.sort(code * rows + row)
    first = np.empty(len(packed), dtype=bool)
    first[0] = True
    first[1:] = packed[1:] != packed[:-1]
    tf = np.diff(np.append(np.flatnonzero(first), len(packed))).astype(np.float64)
    packed = packed[first]
    gram, row = packed // rows, packed % rows
    new_gram = np.empty(len(gram), dtype=bool)
    new_gram[0] = True
    new_gram[1:] = gram[1:] != gram[:-1]
    return tf, gram, row, new_gram


def _unique(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct values, the inverse index and the counts, by one argsort (numpy's hash-based
    ``unique`` is several times slower on these arrays)."""
    if x.size == 0:
        return x, np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(x)
    ordered = x[order]
    first = np.empty(len(x), dtype=bool)
    first[0] = True
    first[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(x), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    counts = np.diff(np.append(np.flatnonzero(first), len(x)))
    return ordered[first], inverse, counts


def _find(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0 (vectorised dictionary lookup)."""
    if sorted_keys.size == 0 or query.size == 0:
        return np.zeros(query.shape, np.float64)
    pos = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == query, values[pos], 0).astype(np.float64)
