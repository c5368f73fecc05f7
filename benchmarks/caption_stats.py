"""What a run's test captions look like, beyond its scores: read the ``bench.json`` that
``real_photos.py`` leaves in each ``eval_<arm>_seed<n>/`` folder and print, per run, CIDEr, distinct
captions, words a caption, captions that repeat a word (other than "a") three times or more, captions
that end on a word ``flickr8k_scst.yaml``'s ``decode.bad_endings`` bars (cut mid-phrase), and captions that
never ended (as many words as the run's ``decode.max_len`` steps: cut by the step limit, not by <end>).

Usage: python benchmarks/caption_stats.py output/real_photos/eval_sat_seed0 output/real_photos/eval_sat_scst_seed0 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCST = yaml.safe_load((ROOT / "code" / "configs" / "flickr8k_scst.yaml").read_text())
BAD_ENDINGS = set(SCST["decode"]["bad_endings"])


def stats(captions: list[str], max_len: int) -> dict[str, float]:
    words = [c.split() for c in captions]
    unended = [len(w) >= max_len for w in words]  # max_len steps, none of them <end>
    return {
        "distinct": len(set(captions)),
        "words": sum(map(len, words)) / max(len(words), 1),
        "repeating": sum(any(w.count(x) >= 3 and x != "a" for x in set(w)) for w in words),
        "cut": sum(bool(w) and w[-1] in BAD_ENDINGS and not u for w, u in zip(words, unended)),
        "unended": sum(unended),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="eval_<arm>_seed<n> folders (each with bench.json)")
    a = ap.parse_args()
    columns = ["run", "CIDEr", "captions", "distinct", "words a caption", "repeating a word 3+ times", "cut mid-phrase"]
    print("| " + " | ".join([*columns, "never ended"]) + " |\n|" + "---|" * (len(columns) + 1))
    for run in map(Path, a.runs):
        record = json.loads((run / "bench.json").read_text())
        if "captions" not in record:
            sys.exit(f"{run}: bench.json has no captions (the run was not scored)")
        caps = list(record["captions"].values())
        s = stats(caps, record["config"]["decode"]["max_len"])
        print(f"| {run.parent.name}/{run.name} | {record['CIDEr']:.3f} | {len(caps)} | {s['distinct']} | "
              f"{s['words']:.1f} | {s['repeating']} | {s['cut']} | {s['unended']} |")  # fmt: skip


if __name__ == "__main__":
    main()
