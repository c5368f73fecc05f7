"""torchrun support: the trainer runs unchanged on one process or under ``torchrun --nproc_per_node N``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment; NCCL on CUDA, gloo on CPU. One GPU per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda") or device_pref.startswith("cuda")
    if info.enabled:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    else:
        device = torch.device(("cuda" if use_cuda else "cpu") if device_pref == "auto" else device_pref)
    if device.type == "cuda":
        if device.index is None:  # set_device needs an index: plain "cuda" means the current GPU
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_across(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks decide together to skip a step or to stop."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_object(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (a one-element list without torchrun)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(model: torch.nn.Module, info: DistInfo) -> None:
    """What DDP does in backward, for losses that cannot go through DDP's forward (self-critical)."""
    if not info.enabled:
        return
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= info.world_size


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
