"""Score tables as markdown: the one format the CLI, the demo, the notebooks and the README print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .attributes import ATTRIBUTES


def markdown_table(rows: Mapping[str, Mapping[str, Any]], title: str, keys: Sequence[str]) -> str:
    """One row per named result, one column per key, values to three decimals."""
    head = "| " + " | ".join([title, *keys]) + " |"
    sep = "|" + "|".join(["---"] * (len(keys) + 1)) + "|"
    body = ["| " + " | ".join([name, *(f"{r[k]:.3f}" for k in keys)]) + " |" for name, r in rows.items()]
    return "\n".join([head, sep, *body])


def format_attribute_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    return markdown_table(rows, "attribute accuracy", (*ATTRIBUTES, "overall"))


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table of the numeric metrics, one row per named result (e.g. model or beam size)."""
    keys = [k for k, v in next(iter(rows.values())).items() if isinstance(v, (int, float))]
    return markdown_table(rows, "run", keys)


def format_report(name: str, metrics: dict[str, Any]) -> str:
    """The metric table, and under it the attribute table where the split is synthetic."""
    text = format_table({name: metrics})
    attrs = metrics.get("attribute_accuracy")
    if attrs:
        rows = {name: attrs["accuracy"]}
        if attrs.get("recall"):
            rows[f"{name}: recall (the scene's attributes it states)"] = attrs["recall"]
        if attrs.get("blind_floor"):
            rows["blind floor (captions vs other images)"] = attrs["blind_floor"]
        text += "\n\n" + format_attribute_table(rows)
    if metrics.get("grounding"):
        text += "\n\n" + format_grounding(metrics["grounding"])
    return text


def format_grounding(g: dict[str, Any]) -> str:
    if not g["words"]:
        return "grounding rate: no generated word names an object of its scene"
    return (
        f"grounding rate {g['grounding_rate']:.3f} (chance {g['chance_rate']:.3f}) over {g['words']} words "
        "that name an object of the scene"
    )


def stats_table(stats: dict[str, dict[str, Any]]) -> str:
    """Caption statistics per set (``rebuild-export``: the original and the rebuilt captions)."""
    rows = [
        "| captions | count | mean words | longest | vocabulary | most frequent words |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in stats.items():
        top = ", ".join(w for w, _ in s["top_words"][:8])
        rows.append(
            f"| {name} | {s['captions']} | {s['mean_length']:.1f} | {s['max_length']} | {s['vocabulary']} | {top} |"
        )
    return "\n".join(rows)
