"""Training counts the tokens the scorer counts (issue 38, item 7): the English tokenizer gives
pycocoevalcap's PTB tokens, a caption written from them is scored as those same tokens, and the SCST
reward and the nearest-neighbour consensus read captions the same way. Against the Java tokenizer on a
committed list of caption-like lines (always, where Java is installed) and on every caption of the
Flickr8k subset (where present)."""

from __future__ import annotations

from captionlab.data.tokenizers import build_tokenizer, scoring_text
from captionlab.training.scst import Reward
from test_ptb import flickr_captions, java, java_tokens

# hyphens, apostrophes, numbers and punctuation as real caption sets write them (Flickr8k, COCO styles)
CAPTIONS = [
    "A man in a t-shirt and flip-flops walks down a snow-covered road .",
    "A dog 's toy lies on the grass",
    "The dog's ball is red-and-white.",
    "Two kids don't want to leave the merry-go-round!",
    "A 3-year-old girl in a #23 jersey holds 2 balloons, smiling.",
    "A man wearing a hat (and sunglasses) sits on a bench; a woman waits.",
    "A woman in her 20's is rock-climbing at 5:30 pm",
    'Several people watch a "Stop" sign near the U.S. flag outside',
    "A black-and-white photo of a 1950s car that can't start ...",
    "The boys' team high-fives after the game -- they won",
    "A girl on a see-saw with her brother , who is laughing ?",
    "A man who's wearing a hi-viz vest and they're both working on an I-beam",
    "An x-ray of a 12.5 inch fish, 1,000 feet under water",
    "People at a go-kart race: cars #7 and #12 lead",
    "A close-up of a dog's face , it 's brown",
]


def test_english_tokens_are_the_scorers_without_java():
    """Always runs: what the Java tokenizer gives for these, written down (checked against it below)."""
    tok = build_tokenizer("en_word")
    assert tok.tokenize("A man's t-shirt, isn't it?") == ["a", "man", "'s", "t-shirt", "is", "n't", "it"]
    assert tok.tokenize("A 3-year-old with 1,000 balloons at 5:30.") == ["a", "3-year-old", "with", "1,000"] + [
        "balloons",
        "at",
        "5:30",
    ]
    assert tok.detokenize(["a", "man", "'s", "t-shirt", "is", "n't", "it"]) == "a man's t-shirt isn't it"


@java
def test_english_tokens_are_pycocoevalcaps_on_the_committed_captions():
    want = java_tokens({i: [c] for i, c in enumerate(CAPTIONS)})
    tok = build_tokenizer("en_word")
    got = {i: [" ".join(tok.tokenize(c))] for i, c in enumerate(CAPTIONS)}
    assert got == want
    written = {i: [tok.detokenize(tok.tokenize(c))] for i, c in enumerate(CAPTIONS)}
    assert java_tokens(written) == want  # the caption a model writes from these tokens scores as them


@java
def test_every_flickr8k_caption_trains_on_the_tokens_it_is_scored_on():
    captions = flickr_captions()
    tok = build_tokenizer("en_word")
    want = java_tokens(captions)
    got = {k: [" ".join(tok.tokenize(c)) for c in v] for k, v in captions.items()}
    wrong = [(k, a, b) for k in captions for a, b in zip(want[k], got[k]) if a != b]
    assert not wrong, f"{len(wrong)} captions differ, e.g. {wrong[:3]}"
    written = {k: [tok.detokenize(tok.tokenize(c)) for c in v] for k, v in captions.items()}
    assert java_tokens(written) == want


def test_the_reward_counts_a_hyphenated_word_as_the_scorer_does():
    """A caption that writes the references' "t-shirt" earns the full reward; one that writes
    "t shirt" (what the old word tokenizer trained models to write) does not."""
    refs = {
        0: ["A man in a red t-shirt .", "A man wears a red t-shirt", "a man in a red t-shirt smiles"],
        1: ["A dog runs on the grass .", "a brown dog runs", "A dog is running outside"],
        2: ["Two girls play in the snow", "two kids in the snow", "Children play in snow ."],
    }  # three images: CIDEr-D's document frequencies need more than one
    reward = Reward("CIDEr", refs, scoring_text(build_tokenizer("en_word")))
    right, split = reward(["a man in a red t-shirt", "a man in a red t shirt"], [0, 0])
    assert right > split + 0.5
    assert scoring_text(build_tokenizer("en_word"))("The dog's t-shirt.") == "the dog 's t-shirt"
