"""Score tables as markdown: the one format the CLI, the demo, the notebooks and the README print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(rows: Mapping[str, Mapping[str, Any]], title: str, keys: Sequence[str]) -> str:
    """One row per named result, one column per key, values to three decimals."""
    head = "| " + " | ".join([title, *keys]) + " |"
    sep = "|" + "|".join(["---"] * (len(keys) + 1)) + "|"
    body = ["| " + " | ".join([name, *(f"{r[k]:.3f}" for k in keys)]) + " |" for name, r in rows.items()]
    return "\n".join([head, sep, *body])
