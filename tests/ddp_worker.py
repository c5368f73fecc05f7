"""Run by test_ddp under torchrun: trains the tiny config and records this rank's final weights."""

import hashlib
import os
import sys

import torch

from captionlab.config import load_config
from captionlab.training.trainer import train

cfg = load_config(sys.argv[1], sys.argv[3:])
result = train(cfg, progress=False)
h = hashlib.sha256()
for k, v in sorted(result.model.named_parameters()):  # BN buffers sync at the next forward, not after the last
    h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.txt"), "w") as f:
    f.write(f"{h.hexdigest()} {torch.distributed.is_available()} {os.environ['WORLD_SIZE']}\n")
