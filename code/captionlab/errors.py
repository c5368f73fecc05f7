"""The errors a user can meet and fix, under one base class.

Each message is one line that says what is wrong and what to do. The CLI prints a ``CaptionlabError``
as that line and exits 2; anything else (a KeyError from a bug, a ValueError deep in a library) keeps its
traceback, so programming errors are never disguised as bad input. The subclasses also derive from
the built-in type they refine, so ``except ValueError`` around library calls keeps working."""

from __future__ import annotations


class CaptionlabError(Exception):
    """Base of every expected error; ``str(e)`` is its one-line message (a KeyError's too)."""

    def __str__(self) -> str:
        text = str(self.args[0]) if len(self.args) == 1 else super().__str__()  # OSError(errno, text) as OSError
        # A DataLoader worker's error comes back as type(e)("Caught ... Original Traceback ...: <message>"):
        # the user's line is the original message, the last line of that text.
        name = f"{type(self).__name__}: "
        if text.startswith("Caught ") and "Original Traceback" in text and name in text:
            return text.rsplit(name, 1)[1].strip()
        return text


class InputError(CaptionlabError, ValueError):
    """A value, file or option given by the user that cannot be used as it is."""


class MissingError(CaptionlabError, FileNotFoundError):
    """A file or folder the user named, or must provide, is not there."""


class ExistsError(CaptionlabError, FileExistsError):
    """Something would be overwritten without ``--overwrite``."""


class UnknownNameError(CaptionlabError, KeyError):
    """A name (model, tokenizer, dataset format, metric, ...) that no registry knows."""
