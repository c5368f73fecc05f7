"""What an exact mid-epoch resume needs beyond weights and optimizer, and the stop signals.

A mid-epoch ``last.pt`` records how many batches of the epoch are done, the running sums behind the
epoch's logged means, and every random number generator (Python, numpy, torch, CUDA), per rank.
Resuming rebuilds the epoch's sampler (its order depends on (seed, epoch) only), skips the batches
already done, and restores the generators after the data iterator is created, so the rest of the
run draws exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from ..config_rules import flat_config
from ..errors import InputError


def capture_rng() -> dict[str, Any]:
    """Generator states as plain types and tensors (a checkpoint loads them with weights_only)."""
    state = np.random.get_state()
    out: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [state[0], state[1].tolist(), int(state[2]), int(state[3]), float(state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """The states may come back on the GPU (a checkpoint loaded with map_location="cuda"); the
    generators take CPU byte tensors only."""
    random.setstate(as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def as_tuples(x: Any) -> Any:
    """A random.getstate() that went through a checkpoint comes back with lists where setstate wants tuples."""
    return tuple(as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class SkipSampler(Sampler[int]):
    """The epoch's sampler without its first ``skip`` indices: the batches a resumed epoch already did."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip) if isinstance(self.sampler, Sized) else 0


class TrainingStopped(Exception):
    """Training stopped on a signal after saving ``last.pt``; ``code`` is the exit status to return."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class StopSignals:
    """SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) ask the loop to stop after the current
    step; a second Ctrl-C raises KeyboardInterrupt at once. Inside ``with`` only, main thread only."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second Ctrl-C is not polite
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __enter__(self) -> StopSignals:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 130 if self.received == signal.SIGINT else 143

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""


def check_resumable(path: Any, ckpt: dict, cfg: Any, vocab: list[str]) -> None:
    """The run resumed must be the one saved: the same vocabulary and model (one line naming the keys
    where not, rather than load_state_dict's traceback)."""
    if ckpt["vocab"] != vocab:
        raise InputError(
            f"{path}: its vocabulary differs from the one built from {cfg.data.path}; "
            "resume with the same data settings"
        )
    mine, theirs = flat_config(cfg.model), flat_config(ckpt["config"]["model"])
    changed = [k for k in mine if k in theirs and mine[k] != theirs[k]]
    if changed:
        raise InputError(
            f"--resume: {path} was trained with another model: "
            + ", ".join(f"model.{k} is {mine[k]!r} here, {theirs[k]!r} there" for k in changed)
            + "; resume with its config, or start a new run"
        )


def load_training_state(ckpt: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, t: Any) -> None:
    """Weights and optimiser state; the learning rates and weight decay are this config's (``train.lr=``
    given with ``--resume`` applies, as config.yaml then says), not the saved groups'."""
    model.load_state_dict(ckpt["model"])
    if "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        for group, lr in zip(optimizer.param_groups, (t.lr, t.encoder_lr)):
            group.update(base_lr=lr, weight_decay=t.weight_decay)
