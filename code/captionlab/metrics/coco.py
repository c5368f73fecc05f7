"""Reference caption metrics through pycocoevalcap, with the standard key names.

``tokenizer="ptb"`` runs the Stanford PTB tokenizer (Java), as the COCO server does: use it for
numbers you report. ``tokenizer="ptb-python"`` gives the same tokens in-process (data/ptb.py), so the
same BLEU, ROUGE-L and CIDEr-D with no Java: ``score --fast`` and per-epoch validation use it.
``tokenizer="simple"`` lower-cases and drops punctuation: for text the PTB tokenizer would mangle
(space-joined Chinese characters).
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import CaptionlabError, InputError
from ..files import read_json
from ..metric_keys import KEY_ORDER
from ..registry import Registry
from ..weights import MissingWeightsError

ALL_METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")
FAST_METRICS = ("Bleu", "ROUGE_L", "CIDEr")  # no Java: for per-epoch validation
TOKENIZERS = ("ptb", "ptb-python", "simple")
_PUNCT = re.compile(r"[^\w\s']|_")


class JavaMissingError(CaptionlabError, RuntimeError):
    """Java, which pycocoevalcap's PTB tokenizer and METEOR run on, is not installed."""


def _need_java(what: str) -> None:
    if shutil.which("java") is None:
        raise JavaMissingError(
            f"{what} needs Java 8+ ('java' is not on PATH). Install it, e.g. "
            "'apt-get install default-jre-headless', or score with tokenizer='ptb-python' "
            "(captionlab score --fast) and without METEOR."
        )


def check_java(metrics: Sequence[str], tokenizer: str, what: str, instead: str = "") -> None:
    """Before the work rather than after it: where ``what`` will score ``metrics`` with ``tokenizer``
    and that needs Java, which is missing, one line naming the package and the Java-free way (``instead``)."""
    needs = [m for m in metrics if m in ("METEOR", "SPICE")] + (["the PTB tokenizer"] if tokenizer == "ptb" else [])
    if needs and shutil.which("java") is None:
        raise JavaMissingError(
            f"{what} scores with {' and '.join(needs)}, which run on Java 8+, and 'java' is not on PATH: install "
            f"it (e.g. 'apt-get install default-jre-headless'){instead}"
        )


CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _need_corenlp() -> None:
    """pycocoevalcap's SPICE downloads Stanford CoreNLP at run time when its jars are absent: say which
    files to put where instead, and never start that download."""
    _need_java("SPICE")
    import pycocoevalcap.spice

    lib = Path(pycocoevalcap.spice.__file__).parent / "lib"
    missing = [j for j in CORENLP_JARS if not (lib / j).is_file()]
    if missing:
        raise MissingWeightsError(
            f"SPICE needs Stanford CoreNLP 3.6.0: put {' and '.join(missing)} (from "
            f"http://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip) into {lib}; "
            "captionlab does not download them"
        )


def simple_tokenize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _tokenize(captions: Mapping[Any, Sequence[str]], tokenizer: str) -> dict[Any, list[str]]:
    if tokenizer == "simple":
        return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}
    if tokenizer == "ptb-python":
        from ..data.ptb import tokenize

        return tokenize(captions)
    if tokenizer != "ptb":
        raise InputError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
    _need_java("the PTB tokenizer")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


class _FastCider:
    """pycocoevalcap's scorer interface over the vectorised CIDEr-D (same numbers, no Python loops)."""

    def compute_score(self, gts, res):
        from .cider import cider_d

        corpus, each = cider_d(res, gts)
        return corpus, list(each)


_METEOR: list[Any] = []  # the one METEOR scorer of this process


def meteor() -> Any:
    """pycocoevalcap's METEOR, started once per process and reused: its Java process takes seconds to
    load its paraphrase tables, and a notebook or a test session scores many times (it was one per
    score() call). Restarted if its process has died."""
    _need_java("METEOR")
    if not _METEOR or _METEOR[0].meteor_p.poll() is not None:
        from pycocoevalcap.meteor.meteor import Meteor

        _METEOR[:] = [Meteor()]
    return _METEOR[0]


# --metrics names -> a pycocoevalcap scorer (``fast_cider``: the vectorised CIDEr-D). The CLI's help and
# its check of --metrics read this registry; a new metric is one registered function here.
SCORERS: Registry[Callable[[bool], Any]] = Registry("metric")


@SCORERS.register("Bleu")
def _bleu(fast_cider: bool) -> Any:
    from pycocoevalcap.bleu.bleu import Bleu

    return Bleu(4)


@SCORERS.register("METEOR")
def _meteor(fast_cider: bool) -> Any:
    return meteor()


@SCORERS.register("ROUGE_L")
def _rouge(fast_cider: bool) -> Any:
    from pycocoevalcap.rouge.rouge import Rouge

    return Rouge()


@SCORERS.register("CIDEr")
def _cider(fast_cider: bool) -> Any:
    if fast_cider:
        return _FastCider()
    from pycocoevalcap.cider.cider import Cider

    return Cider()


@SCORERS.register("SPICE")
def _spice(fast_cider: bool) -> Any:
    _need_corenlp()
    from pycocoevalcap.spice.spice import Spice

    return Spice()


def check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    """The names, each one a registered metric (refused in one line before anything is captioned)."""
    names = tuple(metrics)
    for name in names:
        SCORERS.get(name)  # UnknownNameError: unknown metric 'X'; known: ...
    return names


def _scorers(metrics: Iterable[str], fast_cider: bool = False):
    for name in check_metrics(metrics):
        yield name, SCORERS.get(name)(fast_cider)


def score(
    results: Mapping[Any, str],
    references: Mapping[Any, Sequence[str]],
    metrics: Sequence[str] = ALL_METRICS,
    tokenizer: str = "ptb",
    per_image: bool = False,
    fast_cider: bool = False,
) -> dict[str, Any]:
    """Corpus scores of ``results`` (image id -> caption) against ``references`` (image id -> captions).

    Only images in ``results`` are scored (as the COCO evaluation does). CIDEr here is CIDEr-D
    with document frequencies from the references of the images being scored; ``fast_cider``
    computes it with the vectorised scorer (metrics/cider.py: equal to 1e-6, many times faster).
    """
    if not results:
        raise InputError("no results to score")
    missing = [k for k in results if k not in references]
    if missing:
        raise InputError(f"{len(missing)} result image id(s) have no references, e.g. {missing[:5]}")
    empty = [k for k in results if not references[k]]
    if empty:
        raise InputError(f"{len(empty)} image(s) have an empty reference list, e.g. {empty[:5]}")
    ids = list(results)
    gts = _tokenize({k: list(references[k]) for k in ids}, tokenizer)
    res = _tokenize({k: [results[k]] for k in ids}, tokenizer)
    out: dict[str, Any] = {}
    images: dict[Any, dict[str, float]] = {k: {} for k in ids}
    for name, scorer in _scorers(metrics, fast_cider):
        if name == "Bleu":
            corpus, each = scorer.compute_score(gts, res, verbose=0)
        else:
            corpus, each = scorer.compute_score(gts, res)
        keys = [f"Bleu_{n + 1}" for n in range(4)] if name == "Bleu" else [name]
        corpus = corpus if name == "Bleu" else [corpus]
        each = each if name == "Bleu" else [each]
        for key, c, e in zip(keys, corpus, each):
            out[key] = float(c)
            for k, v in zip(ids, e):
                images[k][key] = float(v if not isinstance(v, dict) else v["All"]["f"])
    out = {k: out[k] for k in KEY_ORDER if k in out}
    if per_image:
        out["per_image"] = images
    return out


def load_results(path: str | Path) -> dict[Any, str]:
    """COCO results file: ``[{"image_id": ..., "caption": ...}, ...]``."""

    path = Path(path)
    data = read_json(path, "results file")
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of {{'image_id', 'caption'}} objects")
    out: dict[Any, str] = {}
    for i, r in enumerate(data):
        if not isinstance(r, dict) or "image_id" not in r or "caption" not in r:
            raise InputError(f"{path}: entry {i} needs 'image_id' and 'caption'")
        if r["image_id"] in out:
            raise InputError(f"{path}: image_id {r['image_id']!r} appears twice (entry {i})")
        if not isinstance(r["caption"], str):
            raise InputError(f"{path}: entry {i}: caption must be a string")
        out[r["image_id"]] = r["caption"]
    return out


def load_annotations(path: str | Path) -> dict[Any, list[str]]:
    """COCO caption annotations: ``{"images": [...], "annotations": [{"image_id", "caption"}]}``."""

    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(f"{path}: expected an object with an 'annotations' list (COCO caption format)")
    refs: dict[Any, list[str]] = {img["id"]: [] for img in data.get("images", []) if isinstance(img, dict)}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "caption" not in a:
            raise InputError(f"{path}: annotations[{i}] needs 'image_id' and 'caption'")
        if not isinstance(a["caption"], str) or not a["caption"].strip():
            raise InputError(f"{path}: annotations[{i}] (image {a['image_id']!r}): empty caption")
        refs.setdefault(a["image_id"], []).append(a["caption"])
    return refs


def image_paths(path: str | Path, image_root: str | Path | None = None) -> dict[Any, Path]:
    """Image id -> file of a COCO annotation file's ``images``: ``file_path`` (what captionlab writes)
    or ``image_root`` / ``file_name`` (default root: the annotation file's folder)."""

    path = Path(path)
    data = read_json(path)
    root = Path(image_root) if image_root else path.parent
    out = {}
    for img in data.get("images", []) if isinstance(data, dict) else []:
        if isinstance(img, dict) and "id" in img and ("file_path" in img or "file_name" in img):
            out[img["id"]] = (
                Path(img["file_path"]) if img.get("file_path") and not image_root else root / img["file_name"]
            )
    return out


def score_files(
    results_path: str | Path,
    annotations_path: str | Path,
    metrics: Sequence[str] = ALL_METRICS,
    tokenizer: str = "ptb",
    fast_cider: bool = False,
) -> dict[str, Any]:
    results = load_results(results_path)
    refs = load_annotations(annotations_path)
    unknown = [k for k in results if k not in refs]
    if unknown:
        shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise InputError(
            f"{len(unknown)} image id(s) in results file {results_path} are not in annotation file "
            f"{annotations_path}: {shown}"
        )
    unscored = len([k for k in refs if k not in results])
    if unscored:
        warnings.warn(f"{unscored} annotated image(s) have no result and are not scored", stacklevel=2)
    return score(results, refs, metrics, tokenizer, fast_cider=fast_cider)
