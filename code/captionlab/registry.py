"""Name -> class registries, so a config file or CLI flag can name any model or tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import InputError, UnknownNameError

T = TypeVar("T")

# The two registries ``model.name`` chooses from: captioners (what decodes) and pre-training models
# (the dual encoder: trained, never decoded). models/registry.py creates them under these kinds.
CAPTIONERS_KIND, TOWERS_KIND = "model", "pre-training model"
MODEL_KINDS = (CAPTIONERS_KIND, TOWERS_KIND)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        _ALL[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise InputError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


_ALL: dict[str, Registry] = {}


def _kinds(kind: str | tuple[str, ...]) -> list[Registry]:
    return [_ALL[k] for k in ((kind,) if isinstance(kind, str) else kind) if k in _ALL]


def registry_names(kind: str | tuple[str, ...]) -> list[str]:
    """Names registered under ``kind`` ("model", "tokenizer", ..., or several kinds): config checking
    reads them here, so ``config.py`` needs no import of the modules that fill the registries."""
    return sorted(n for reg in _kinds(kind) for n in reg.names())


def registry_items(kind: str | tuple[str, ...]) -> dict[str, object]:
    """Every name registered under ``kind`` (or several kinds) with what it names."""
    return {n: v for reg in _kinds(kind) for n, v in reg._items.items()}


def registry_get(kind: str | tuple[str, ...], name: str) -> object | None:
    """What ``name`` is registered as under ``kind``, or None (unknown, or the registry not filled yet)."""
    return next((reg._items[name] for reg in _kinds(kind) if name in reg), None)
