"""benchmarks/caption_stats.py, whose counts docs/results.md quotes for SCST: a caption cut by the step
limit is not one that chose to end on a barred word, and "a" alone does not make a repetition."""

from __future__ import annotations

from caption_stats import stats


def test_repetitions_cut_endings_and_unended_captions_are_told_apart():
    captions = [
        "a man in a red shirt",  # "a" three times: not a repetition
        "a shirt and a shirt and a shirt",  # "shirt" three times
        "a dog runs on",  # ended on a barred word
        "a b c d e f g h i of",  # as many words as steps: never ended, whatever its last word
        "a dog runs on",
    ]
    s = stats(captions, max_len=10)
    assert s == {"distinct": 4, "words": (6 + 8 + 4 + 10 + 4) / 5, "repeating": 1, "cut": 2, "unended": 1}
