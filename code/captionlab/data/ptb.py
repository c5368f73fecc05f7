"""pycocoevalcap's caption tokenization in Python: Stanford's PTBTokenizer (CoreNLP 3.4.1, run by
pycocoevalcap as ``-preserveLines -lowerCase``) followed by pycocoevalcap's removal of punctuation tokens.

Why: ``score --fast`` and per-epoch validation must give pycocoevalcap's BLEU, ROUGE-L and CIDEr-D
without starting Java. A lower-case-and-strip-punctuation tokenizer does not: it splits "t-shirt" and
keeps "dog's" whole, where the PTB tokenizer keeps the first and splits the second ("dog 's"), which
moves ROUGE-L and CIDEr in the fourth decimal on real captions.

What is reproduced is what captions contain: clitics and contractions ("do n't", "dog 's", "can not",
"gon na"), hyphens and dash runs, left/right quotes (``, '', `, '), brackets (-lrb- ... kept, as the
lower-cased Java output is not in pycocoevalcap's punctuation list), numbers (decimals, thousands,
times, fractions), currency, ellipses, sentence-final periods against abbreviations and acronyms, and
the unicode quotes, dashes, fractions and invisible characters the tokenizer normalises.
tests/test_ptb.py checks it token for token against the Java tokenizer on real captions and on
adversarial strings. URLs, e-mail addresses, SGML tags and emoticons are not handled specially.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS: the tokens it drops after tokenizing
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Abbreviations that keep their period (compared case-insensitively). ABBREV_SENTENCE ones are taken to
# end a sentence when an upper-case word follows, and the tokenizer then writes the period twice.
ABBREV_SENTENCE = frozenset(
    """jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri ala ariz az ark
    calif colo conn ct dak del fla ga ill ind kan kans ky la mass md mich minn miss mo mont neb nev okla ore
    pa penn tenn tex va vt wash wis wisc wyo inc co cos corp pty ltd plc rt bancorp bhd assn univ intl sys
    tel est ext sq jr sr bros esq etc al seq bldg blvd rd""".split()
)
ABBREV_TITLE = frozenset(
    """mr mrs ms drs dr prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt
    cpl pvt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det mt ft adj adv asst assoc
    ens insp mlle mme msgr sfc invt elec natl mfg mtg dept wm jos cie cf ph vs""".split()
)
_ALWAYS_ABBREV = ABBREV_TITLE | ABBREV_SENTENCE
ABBREV_BEFORE_NUMBER = frozenset("ca fig figs prop no nos pp op".split())  # "no. 5", but "is no ."

# Whole words the tokenizer splits (case kept): "cannot" -> "can not", "gonna" -> "gon na".
SPLIT_WORDS = {"cannot": 3, "gonna": 2, "gotta": 2, "lemme": 2, "gimme": 2, "wanna": 2}
CLITICS = ("'s", "'m", "'d", "'re", "'ve", "'ll")

_CHAR_MAP = {
    "\u00a3": "#", "\u20ac": "$", "\u00a2": " cents ", "\u20b9": "", "\u2012": " ",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": " ", "\u00ad": "",
}  # fmt: skip
_TRANSLATE = str.maketrans(_CHAR_MAP)
# quote characters: up to two in a row are one token, each character written as its ASCII quote
_QUOTE_CHARS = {"`": "`", "\u2018": "`", "\u2019": "'", "\u201c": "``", "\u201d": "''", "\u00ab": "``",
                "\u00bb": "''", "\u2039": "`", "\u203a": "'"}  # fmt: skip
_DASHES = {"\u2013": "--", "\u2014": "--", "\u2015": "--"}  # en, em and horizontal bar: a token each
_FRACTIONS = {"\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

_LETTER = r"[^\W\d_\u00bd\u00bc\u00be\u2153\u2154]"
_APOS = "['\u2019]"  # the ASCII apostrophe and the right single quote, which stands for it
_ALNUM = r"[^\W_\u00bd\u00bc\u00be\u2153\u2154]"
# a letter-initial part may join letters with . ! ? ("dog.a"); a digit-initial one numbers with . , :
_WORD_PART = rf"{_LETTER}{_ALNUM}*(?:[.!?]{_LETTER}{_ALNUM}*)*"
_NUMBER_PART = rf"\d+(?:[.,:]\d+)*{_ALNUM}*"
_PART = rf"(?:{_WORD_PART}|{_NUMBER_PART})"
_APOS_NAME = rf"(?:[oOdDlL]{_APOS}(?={_LETTER}{{2}}))"  # O'Neil, d'Arcy, l'amour, o'clock
_THING = re.compile(rf"[A-Z]+(?:&[A-Z]+)+(?![^\W_])|{_APOS_NAME}?{_PART}(?:[-\u2010\u2011/_]{_APOS_NAME}?{_PART})*")
_LOOSE_NUMBER = re.compile(r"\.\d+|-\d+(?:[.,:]\d+)*")
_BRACKET_WORD = re.compile(r"-(?:LRB|RRB|LSB|RSB|LCB|RCB)-", re.IGNORECASE)
_ACRONYM = re.compile(rf"{_LETTER}(?:\.{_LETTER})+")  # u.s, a.m, e.g
_SPACED_DOTS = re.compile(r"(?<!\S)\.(?: \.)+(?= |$)")
_SYMBOL_RUN = re.compile(r"\.{3,}|\u2026|[?!]+|-{5,}|-{2,4}|\*+|_+|#+|''")


# Capitalised words taken to start a sentence after an initial or acronym ("plan B. The ..."): measured
# against the Java tokenizer over every word of the Flickr8k captions and common function words.
SENTENCE_STARTS = frozenset(
    """a about after an as at but he her here however if in it many more now once one other our she since so
    some such that the their then there these they this we what when while yet you""".split()
)
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")  # emoji and the like: the tokenizer drops them


def tokenize(captions: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """pycocoevalcap's ``PTBTokenizer().tokenize`` without Java: image id -> its captions, tokenized.

    The Java tokenizer reads all captions as one text, one per line, and looks past the end of a line:
    whether a caption's final "B." or "U.S." ends a sentence depends on the first word of the next caption
    in that text (images in order, each image's captions in order). So captions are taken in that order."""
    keys = [k for k, v in captions.items() for _ in v]
    chunks = [_pieces(c) for v in captions.values() for c in v]
    out: dict[Any, list[str]] = {k: [] for k in captions}
    following = ""  # the first piece of the next caption that has one
    lines = []
    for pieces in reversed(chunks):
        lines.append(_line(pieces, following))
        following = pieces[0] if pieces else following
    for k, line in zip(keys, reversed(lines)):
        out[k].append(line)
    return out


def ptb_tokenize(caption: str, following: str = "") -> str:
    """One caption -> its tokens as pycocoevalcap scores them: lower case, space-joined, punctuation dropped.
    ``following``: the next caption's first piece, if it is tokenized with others (see ``tokenize``)."""
    after = _pieces(following)
    return _line(_pieces(caption), after[0] if after else "")


def _pieces(caption: str) -> list[str]:
    """The caption's whitespace-free pieces after the character-level normalisation (one line: newlines
    are spaces, as pycocoevalcap writes them; ". . ." is one ellipsis; emoji are gone)."""
    text = _SPACED_DOTS.sub(_dots, caption.replace("\n", " ").translate(_TRANSLATE))
    return _NON_BMP.sub("", text).split()


def _dots(m: re.Match) -> str:
    return "..." if m.group(0).count(".") >= 3 else m.group(0)


def _line(pieces: list[str], following: str) -> str:
    tokens: list[str] = []
    for i, piece in enumerate(pieces):
        tokens.extend(_chunk(piece, _after(pieces[i + 1] if i + 1 < len(pieces) else following)))
    return " ".join(low for low in (t.lower() for t in tokens) if low not in PUNCTUATIONS)


def _after(nxt: str) -> str:
    """What the next piece is, as far as a period before it is concerned."""
    if not nxt:
        return "end"
    if nxt[0].isupper() and nxt.lower() in SENTENCE_STARTS:
        return "start"
    return "upper" if nxt[0].isupper() else "digit" if nxt[0].isdigit() else ""


@lru_cache(maxsize=1 << 16)
def _chunk(chunk: str, after: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free piece of text. ``after`` says what starts the next piece ("start":
    a capitalised sentence-start word, "upper", "digit", "end" of the text, or "" for anything else): it
    decides abbreviations at the end of this one ("Inc. The" ends a sentence, "No. 5" keeps its period)."""
    out: list[str] = []
    i, n = 0, len(chunk)
    while i < n:
        m = _THING.match(chunk, i)
        if not m and chunk[i] == "-":
            m = _BRACKET_WORD.match(chunk, i)
            if m:  # "-LRB-" written out stays one token
                out.append(m.group(0))
                i = m.end()
                continue
        if m:
            i = _word(chunk, m, out, after)
            continue
        c = chunk[i]
        if c in "'\"" or c in _QUOTE_CHARS:
            i = _quote(chunk, i, out)
            continue
        if c in ".-" and i + 1 < n and chunk[i + 1].isdecimal():  # ".5", "-5" (not joined to what was before)
            m = _LOOSE_NUMBER.match(chunk, i)
            out.append(m.group(0))
            i = m.end()
            continue
        run = _SYMBOL_RUN.match(chunk, i)
        if run:
            s = run.group(0)
            out.append("..." if s[0] in ".\u2026" else "--" if s in ("--", "---", "----") else s)
            i = run.end()
            continue
        out.append(_BRACKETS.get(c) or _FRACTIONS.get(c) or _DASHES.get(c) or c)
        i += 1
    return tuple(out)


def _word(chunk: str, m: re.Match, out: list[str], after: str) -> int:
    """A word or number at m; splits its clitics, decides a following period; returns where it ends."""
    word, end, n = m.group(0), m.end(), len(chunk)
    rest = chunk[end:].replace("\u2019", "'")
    low = word.lower()

    def free(k: int) -> bool:  # no letter right after the first k characters of rest
        return not (end + k < n and chunk[end + k].isalpha())

    clitic_next = any(rest[: len(c)].lower() == c and free(len(c)) for c in CLITICS)
    if low in SPLIT_WORDS and free(0) and not clitic_next:
        cut = len(word) - SPLIT_WORDS[low]
        out.extend([word[:cut], word[cut:]])
        return end
    if low in ("y", "th") and rest[:1] == "'" and not free(1) and not clitic_next:
        out.append(word + chunk[end])  # y'all -> y' all
        return end + 1
    if low == "ma" and rest[:3].lower() == "'am" and free(3):
        out.append(word + chunk[end : end + 3])
        return end + 3
    if rest[:2].lower() == "'t" and low.endswith("n") and free(2):
        out.extend([word[:-1], word[-1] + "'" + rest[1]] if len(word) > 1 else [word + "'" + rest[1]])
        return end + 2  # do n't, ca n't, wo n't
    for clitic in CLITICS:
        k = len(clitic)
        if rest[:k].lower() == clitic and free(k):
            out.extend([word, "'" + rest[1:k]])
            return end + k
    if low in ("d", "l") and rest[:1] == "'" and free(1):
        out.append(word + chunk[end])  # d' l'
        return end + 1
    if rest[:1] == ".":  # an abbreviation takes one period, even before more: "U.S...." -> U.S. ...
        if _ACRONYM.fullmatch(word):
            out.extend([word + ".", "."] if end + 1 == n and after == "start" else [word + "."])
            return end + 1  # "U.S. The": the sentence ends here too
        if "." not in word:
            return _period(word, end, out, after, chunk)
    out.append(word)
    return end


def _period(word: str, end: int, out: list[str], after: str, chunk: str) -> int:
    """Whether ``word`` keeps the period that follows it (an abbreviation) or the period is a token."""
    low, last = word.lower(), end + 1 == len(chunk)
    if chunk.startswith("...", end) and low not in _ALWAYS_ABBREV and len(word) > 1:
        out.append(word)  # "dog..." -> dog ...
        return end
    if len(word) == 1 and word.isalpha():  # an initial, unless the line ends or a capital follows
        if not last or after != "start":
            out.append(word + ".")
            return end + 1
        out.append(word)
        return end
    before_number = last and after == "digit" or chunk[end + 1 : end + 2] in (",", ";", ":")
    if low in ABBREV_TITLE or (low in ABBREV_BEFORE_NUMBER and before_number):
        out.append(word + ".")
        return end + 1
    if low in ABBREV_SENTENCE:
        out.extend([word + ".", "."] if last and after in ("start", "upper") else [word + "."])
        return end + 1
    out.append(word)
    return end


def _quote(chunk: str, i: int, out: list[str]) -> int:
    """Quotes become `` '' ` ' by which side they stand on; 's 'd 'll ... after a quote are clitics."""
    c, n = chunk[i], len(chunk)
    if chunk.startswith("''", i):
        out.append("''")
        return i + 2
    if c == '"':
        out.append("``" if i + 1 < n and chunk[i + 1].isalnum() else "''")
        return i + 1
    if c in _QUOTE_CHARS and not (c == "\u2019" and i + 1 < n and chunk[i + 1].isalnum()):
        k = 2 if i + 1 < n and chunk[i + 1] in _QUOTE_CHARS else 1
        out.append("".join(_QUOTE_CHARS[q] for q in chunk[i : i + k]))
        return i + k
    rest = chunk[i:]
    low = ("'" + rest[1:]).lower()

    def free(k: int) -> bool:
        return not (i + k < n and chunk[i + k].isalpha())

    for word in ("'tis", "'twas"):
        if low.startswith(word) and free(len(word)):
            out.extend(["'t", rest[2 : len(word)]])
            return i + len(word)
    special = re.match(r"'n'|'n(?![^\W\d_])|'em(?![^\W\d_])|'\d0s(?![^\W\d_])|'\d\d$", low)
    if special:
        out.append(rest[: special.end()] if low[1:2].isdigit() else "'" + rest[1 : special.end()])
        return i + special.end()
    for clitic in CLITICS:
        if low.startswith(clitic) and free(len(clitic)):
            out.append("'" + rest[1 : len(clitic)])
            return i + len(clitic)
    left = i + 2 < n and chunk[i + 1].isalpha()  # ' + a letter + more: an opening quote
    out.append("`" if left else "'")
    return i + 1
