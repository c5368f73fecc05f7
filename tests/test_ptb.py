"""The in-process PTB tokenizer against the Java one pycocoevalcap runs: token for token on real
captions and adversarial strings, and BLEU / ROUGE-L / CIDEr-D of ``score --fast`` equal to
pycocoevalcap's. Needs Java (skips, saying so, without it); the real captions need ../shared/flickr8k_subset."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from captionlab.cli import main
from captionlab.data.ptb import ptb_tokenize, tokenize
from captionlab.metrics import score
from conftest import SUBSET

java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for pycocoevalcap's PTB tokenizer")

ADVERSARIAL = [
    "A dog's toy isn't here.",
    "I can't, won't, don't; they're we've I'm you'd she'll.",
    "DON'T CAN'T He'S it’s dog’s don’t",
    "cannot gonna wanna gotta lemme gimme 'tis 'twas Cannot's",
    "He said \"hello\" and 'bye' to them.",
    "A (small) [red] {blue} dog.",
    "3.5 1,000 1/2 $5 £3 €4 50% #1 AT&T R&D a&b 9:30 3-4 1990s '90s 80's '50",
    "-5% -1,000 -3-4 .5 5. 5.5. 5.a a.5 v1.2 1.2.3",
    "Wait... what?! Hello.. ok.... end …",
    "Mr. Smith st. Dr. U.S. etc. vs. a.m. p.m. Inc. Jr. St. Mt. No. 5 no. Co.",
    "a t-shirt black-and-white tri-colored -- dash - hyphen --- x- -x ----- a--b",
    "“curly” ‘single’ – en — em … naïve café ½ ¼ ““quoted”",
    "dog`s ``quoted'' a''b",
    "A dog .",
    "O'Neil o'clock rock'n'roll y'all ma'am d'Arcy 'em 'n'",
    "the dogs' toys James' car 'hello' 'a 'ab a'b x'yz",
    "it 's 5 o'clock . OK ? yes ! no !! hmm ?!",
    "a plan B. The end",
    "a man in the U.S. He waves",
    "the dog jr. The cat",
    "a dog on the st. a cat",
    "A plan B.",
    "The dog",
    "she is in the U.S.",
    "A man",
    "emoji 😀 here a\u200bb soft\u00adhyphen a\u00a0b",
    "-LRB- -rrb- (--",
    "",
    "...",
]

WORDS = (
    "a A dog Dog DOG the The man's dogs' don't DON'T can't won't isn't I'm you're they've we'll she'd it's "
    "It's o'clock O'Neil d'Arcy rock'n'roll y'all ma'am cannot Cannot gonna wanna gotta 'tis 'twas 'em '90s "
    "1990s 80's t-shirt black-and-white x-ray 3-4 1,000 3.5 9:30 and/or 50 $5 #1 5% U.S. u.s. a.m. p.m. e.g. "
    "i.e. etc. Mr. Mrs. Dr. St. Inc. Jr. Co. no. No. vs. B. x. café naïve über Straße jalapeño £5 €3 “quoted” "
    "‘single’ don’t dog’s – — … ... .. - & AT&T Q&A pro-life anti-war 2nd 5th 10x well-known off-road"
).split()
STARTS = "The A An In It He She They We This That There These But So If When While As One What You Here".split()
PREFIXES = ["", "", "", "", '"', "'", "(", "[", "{", "``", "-", "“", "‘", "$"]
SUFFIXES = ["", "", "", "", "", ".", ",", ";", ":", "!", "?", "?!", "!!", '"', "'", ")", "]", "}", "''", "...", "-"]
SUFFIXES += [".)", '."', ',"', "'s", "’"]


def random_captions(n: int, seed: int) -> list[str]:
    """Caption-like lines built from the pieces the tokenizer treats specially, punctuation on either side."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(STARTS) if rng.random() < 0.15 else rng.choice(WORDS) for _ in range(rng.randint(1, 9))]
        lines.append(" ".join(rng.choice(PREFIXES) + w + rng.choice(SUFFIXES) for w in words))
    return lines


def java_tokens(captions: dict) -> dict:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def assert_same_tokens(lines: list[str]) -> None:
    captions = {i: [line] for i, line in enumerate(lines)}
    want, got = java_tokens(captions), tokenize(captions)
    wrong = [(lines[i], want[i][0], got[i][0]) for i in captions if want[i] != got[i]]
    assert not wrong, f"{len(wrong)} of {len(lines)} differ, e.g. {wrong[:3]}"


def flickr_captions() -> dict[str, list[str]]:
    if not (SUBSET / "dataset_flickr8k.json").is_file():
        pytest.skip(f"needs the Flickr8k subset at {SUBSET} (not part of the repository)")
    images = json.loads((SUBSET / "dataset_flickr8k.json").read_text())["images"]
    return {im["filename"]: [s["raw"] for s in im["sentences"]] for im in images}


@java
def test_adversarial_strings_tokenize_as_java_does():
    assert_same_tokens(ADVERSARIAL)


@java
def test_random_caption_like_strings_tokenize_as_java_does():
    assert_same_tokens(random_captions(2000, seed=0))


@java
def test_every_flickr8k_subset_caption_tokenizes_as_java_does():
    refs = flickr_captions()
    assert sum(map(len, refs.values())) == 4375
    want, got = java_tokens(refs), tokenize(refs)
    wrong = [(k, i) for k in refs for i in range(len(refs[k])) if want[k][i] != got[k][i]]
    shown = [(refs[k][i], want[k][i], got[k][i]) for k, i in wrong[:3]]
    assert not wrong, f"{len(wrong)} captions differ, e.g. {shown}"


def test_a_period_ends_a_sentence_by_what_comes_next():
    # the Java tokenizer looks past the end of a caption into the next one (tested against Java above)
    assert ptb_tokenize("a plan B.", "The dog") == "a plan b"
    assert ptb_tokenize("a plan B.", "two dogs") == "a plan b."
    assert ptb_tokenize("the dog jr.", "The cat") == "the dog jr."  # "jr. ." and "." is dropped
    assert ptb_tokenize("A dog's toy isn't here.") == "a dog 's toy is n't here"
    assert ptb_tokenize("a (red) t-shirt") == "a -lrb- red -rrb- t-shirt"  # pycocoevalcap keeps -lrb-


def held_out_results(refs: dict[str, list[str]]) -> tuple[dict, dict]:
    """Each image's first human caption as the "result", scored against its other four: real text
    with real punctuation, where a model's output would have none."""
    return {k: v[0] for k, v in refs.items()}, {k: v[1:] for k, v in refs.items()}


@java
def test_fast_scores_equal_pycocoevalcap_on_real_captions():
    results, refs = held_out_results(flickr_captions())
    metrics = ("Bleu", "ROUGE_L", "CIDEr")
    java_scores = score(results, refs, metrics, tokenizer="ptb")
    fast = score(results, refs, metrics, tokenizer="ptb-python", fast_cider=True)
    assert fast == pytest.approx(java_scores, abs=1e-6)
    # what --fast used before: lower-case and strip punctuation, which splits t-shirt and keeps dog's
    simple = score(results, refs, metrics, tokenizer="simple", fast_cider=True)
    assert abs(simple["CIDEr"] - java_scores["CIDEr"]) > 1e-5 or abs(simple["ROUGE_L"] - java_scores["ROUGE_L"]) > 1e-5


@java
def test_score_fast_cli_equals_score_and_says_meteor_needs_java(tmp_path, capsys):
    lines = ADVERSARIAL[:20] + random_captions(100, seed=1)
    images = [{"id": i} for i in range(len(lines) // 2)]
    annotations = [{"image_id": i, "caption": c or "x"} for i, c in enumerate(lines[len(images) :])]
    results = [{"image_id": i, "caption": c or "y"} for i, c in enumerate(lines[: len(images)])]
    (tmp_path / "res.json").write_text(json.dumps(results))
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    args = ["score", str(tmp_path / "res.json"), str(tmp_path / "ann.json"), "--out"]
    assert main([*args, str(tmp_path / "fast.json"), "--fast"]) == 0
    assert "METEOR not computed: it runs on Java" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "java.json"), "--metrics", "Bleu,ROUGE_L,CIDEr"]) == 0
    fast, slow = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("fast", "java"))
    assert fast.keys() == slow.keys() and fast == pytest.approx(slow, abs=1e-6)
