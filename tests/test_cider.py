"""Fast CIDEr-D equals pycocoevalcap's Cider on the same tokenised input, per image and corpus."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captionlab.data import load_dataset
from captionlab.metrics import cider_d
from captionlab.metrics.cider import DocumentFrequency
from captionlab.metrics.coco import simple_tokenize


def assert_same_as_pycocoevalcap(cands, refs):
    ref_score, ref_each = Cider().compute_score(refs, cands)
    score, each = cider_d(cands, refs)
    assert score == pytest.approx(ref_score, abs=1e-6)
    np.testing.assert_allclose(each, np.asarray(ref_each), atol=1e-6, rtol=0)
    return each


def test_equal_on_the_synthetic_test_set(synth_root, tiny_cfg_factory, tmp_path):
    ds = load_dataset(tiny_cfg_factory(tmp_path).data)
    test = ds.split("test")
    refs = {r.image_id: [simple_tokenize(c) for c in r.captions] for r in test}
    # candidates: each image's first reference, or the next image's (wrong) one
    cands = {r.image_id: [simple_tokenize(test[(i + i % 2) % len(test)].captions[0])] for i, r in enumerate(test)}
    each = assert_same_as_pycocoevalcap(cands, refs)
    assert each.max() > 1.0 and each.min() < 0.5  # right and wrong captions are told apart


def test_equal_on_the_edge_cases():
    refs = {
        "repeat": ["a red circle", "a red red circle on the left"],
        "empty": ["two blue boxes", "a pair of blue boxes"],
        "long": ["a star", "one star"],
        "one_ref": ["a green triangle at the top"],
        "twenty": [f"a purple diamond number {k} in the middle" for k in range(20)],
        "unknown": ["a black square"],
    }
    cands = {
        "repeat": ["red red red red circle circle"],
        "empty": [""],
        "long": ["a star " * 15],
        "one_ref": ["a green triangle at the top"],
        "twenty": ["a purple diamond in the middle"],
        "unknown": ["zebra quagga"],
    }
    each = assert_same_as_pycocoevalcap(cands, refs)
    assert each[1] == 0.0 and each[5] == 0.0


def test_keys_order_and_single_candidate_are_checked():
    refs = {2: ["a b"], 1: ["c d"]}
    _, each = cider_d({1: ["c d"], 2: ["x"]}, refs)
    assert each[0] == pytest.approx(5.0) and each[1] == 0.0  # candidates-dict order; no 3- or 4-grams: half of 10
    with pytest.raises(ValueError, match="same image ids"):
        cider_d({1: ["c d"]}, refs)
    with pytest.raises(ValueError, match="exactly one candidate"):
        cider_d({1: ["c d", "e"], 2: ["a"]}, refs)


def test_precomputed_document_frequencies_match_the_corpus_they_came_from():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    refs = {i: [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(5)] for i in range(50)}
    cands = {i: [" ".join(rng.choice(words, rng.integers(1, 12)))] for i in range(50)}
    df = DocumentFrequency.from_references(refs)
    a, each_a = cider_d(cands, refs)
    b, each_b = cider_d(cands, refs, df=df)
    assert a == pytest.approx(b, abs=1e-12) and np.allclose(each_a, each_b)
    # on a subset, the training-corpus df differs from the subset's own, as SCST intends
    sub_refs, sub_cands = {k: refs[k] for k in range(5)}, {k: cands[k] for k in range(5)}
    assert cider_d(sub_cands, sub_refs, df=df)[0] != pytest.approx(cider_d(sub_cands, sub_refs)[0])


def test_score_fast_needs_no_java_and_matches_the_reference_scorer(tmp_path, capsys, monkeypatch):
    import json

    from captionlab.cli import main

    refs = {1: ["a red circle on the left", "a big red disc"], 2: ["two blue boxes"], 3: ["a star", "one star"]}
    res = {1: "a red circle", 2: "two blue squares", 3: "a yellow star"}
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": k, "caption": v} for k, v in res.items()]))
    (tmp_path / "ann.json").write_text(
        json.dumps({"annotations": [{"image_id": k, "caption": c} for k, v in refs.items() for c in v]})
    )
    assert (
        main(
            [
                "score",
                str(tmp_path / "res.json"),
                str(tmp_path / "ann.json"),
                "--tokenizer",
                "simple",
                "--metrics",
                "CIDEr",
                "--out",
                str(tmp_path / "slow.json"),
            ]
        )
        == 0
    )
    monkeypatch.setenv("PATH", "")  # no java anywhere
    assert (
        main(
            [
                "score",
                str(tmp_path / "res.json"),
                str(tmp_path / "ann.json"),
                "--fast",
                "--out",
                str(tmp_path / "fast.json"),
            ]
        )
        == 0
    )
    slow, fast = (json.loads((tmp_path / f).read_text()) for f in ("slow.json", "fast.json"))
    assert fast["CIDEr"] == pytest.approx(slow["CIDEr"], abs=1e-9) and "Bleu_4" in fast
    capsys.readouterr()
    assert main(["score", str(tmp_path / "res.json"), str(tmp_path / "ann.json"), "--fast", "--metrics", "METEOR"]) == 2
    assert "METEOR needs" in capsys.readouterr().err


def test_a_vocabulary_past_46341_words_is_scored_exactly():
    """4-gram keys w1*b^3 + ... + w4 overflow 64 bits past 46,341 distinct words (a Conceptual
    Captions-size corpus): cider_d refused such corpora, with and without precomputed frequencies."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60_000)]
    order = list(rng.permutation(len(words))) + list(rng.integers(0, len(words), 12_000))  # every word once
    tokens = [words[i] for i in order]
    refs = {i: [" ".join(tokens[(i * 5 + j) * 24 : (i * 5 + j + 1) * 24]) for j in range(5)] for i in range(600)}
    cands = {}
    for i, rs in refs.items():  # half a reference's words in order, so that n-grams of every length match
        ref = rs[0].split()
        cands[i] = [" ".join(ref[:12] + [words[int(rng.integers(0, len(words)))] for _ in range(6)])]
    assert len({w for rs in refs.values() for r in rs for w in r.split()}) == 60_000
    ours, each = cider_d(cands, refs)
    theirs, their_each = Cider().compute_score(refs, cands)
    assert ours == pytest.approx(theirs, abs=1e-6) and np.allclose(each, their_each, atol=1e-6)
    with_df, _ = cider_d(cands, refs, DocumentFrequency.from_references(refs))
    assert with_df == pytest.approx(theirs, abs=1e-6)
