"""Property-based tests (hypothesis): vocabulary round trips, the Karpathy reader on arbitrary JSON,
and State.select / expand bookkeeping on random shapes."""

from __future__ import annotations

import json

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captionlab.config import load_config
from captionlab.data.adapters import load_karpathy
from captionlab.data.tokenizers import build_tokenizer
from captionlab.data.vocab import SPECIALS, Vocabulary
from captionlab.models.base import State
from test_ptb import WORDS
from test_scoring_tokens import CAPTIONS

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
# any word a dataset may hold: letters of any script, digits, punctuation, emoji; no spaces, not a special token
ANY_WORD = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=8
).filter(lambda w: w not in SPECIALS and not any(c.isspace() for c in w))
# tokens a model can write, in any order: the scorer's tokens of caption-like lines (clitics, hyphens, numbers)
# (less the first pieces of split words, "'t" of "'tis" and "y'" of "y'all": they come back only beside the rest)
_EN = build_tokenizer("en_word")
_TOKENS = {t for line in CAPTIONS + WORDS for t in _EN.tokenize(line)}
ENGLISH_WORD = st.sampled_from(sorted(t for t in _TOKENS if _EN.tokenize(_EN.detokenize([t])) == [t]))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.lists(st.lists(ANY_WORD, min_size=1, max_size=12), min_size=1, max_size=8), st.integers(1, 12))
def test_vocabulary_round_trip(sentences, max_len):
    vocab = Vocabulary.build(sentences)
    for s in sentences:
        ids = vocab.encode(s, max_len)
        assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
        assert vocab.decode(ids[1:]) == s[:max_len]
    assert Vocabulary(vocab.to_list()) == vocab


@FAST
@given(st.lists(ENGLISH_WORD, min_size=1, max_size=10))
def test_tokenize_detokenize_round_trip(words):
    tok = build_tokenizer("en_word")
    assert tok.tokenize(tok.detokenize(words)) == words


@FAST
@given(st.text(max_size=60), st.sampled_from(["en_word", "zh_char"]))
def test_tokens_of_any_text_survive_detokenizing(text, name):
    """Whatever a caption holds (any script, punctuation, emoji, digits, apostrophes), the tokens a model
    is trained on come back unchanged from the text it writes."""
    tok = build_tokenizer(name)
    tokens = tok.tokenize(text)
    assert tok.tokenize(tok.detokenize(tokens)) == tokens


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["images", "filename", "sentences", "raw", "tokens", "split", "filepath", "cocoid", "imgid", "objects"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSON)
def test_karpathy_reader_on_any_json_fails_cleanly(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    cfg = load_config(overrides=[f"data.path={path}", "data.format=karpathy"]).data
    try:
        ds = load_karpathy(cfg)
    except ValueError as e:  # the one kind of error, naming the file
        assert str(path) in str(e)
    else:
        assert all(r.captions or r.split == "all" for r in ds.records)


@FAST
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.data())
def test_state_select_and_expand_on_random_shapes(images, beams, width, data):
    rows = images * beams
    h, feats = torch.randn(images, width), torch.randn(images, 5, width)
    state = State(h=h, image_feats=feats).expand(beams)
    assert state.batch_size == rows and state.per_image == beams
    assert torch.equal(state["h"], h.repeat_interleave(beams, 0))  # (a, b) -> (a, a, b, b)
    assert state["image_feats"] is feats  # per image: not copied per beam
    # a beam-search reorder: every row picks a row of its own image
    within = torch.tensor([i // beams * beams + data.draw(st.integers(0, beams - 1)) for i in range(rows)])
    kept = state.select(within)
    assert torch.equal(kept["h"], state["h"][within])
    if beams > 1:  # region features are shared by an image's beams, never copied
        assert kept["image_feats"] is state["image_feats"]
    else:  # one row per image: a plain reorder
        assert torch.equal(kept["image_feats"], state["image_feats"][within])
    # any other reorder falls back to per-row copies, still correct
    anywhere = torch.tensor(data.draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=2 * rows)))
    moved = state.select(anywhere)
    assert torch.equal(moved["h"], state["h"][anywhere])
    for r, source in enumerate(anywhere.tolist()):  # every row still meets its own image's regions
        assert torch.equal(moved["image_feats"][r // moved.per_image], feats[source // beams])
    stays = anywhere.numel() == rows and torch.equal(anywhere // beams, torch.arange(rows) // beams)
    expected = state["image_feats"] if stays else state["image_feats"][anywhere // beams]
    assert torch.equal(moved["image_feats"], expected)
