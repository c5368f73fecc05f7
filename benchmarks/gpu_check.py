"""The GPU paths, end to end on a CUDA machine: AMP training (CNN+GRU, ViT+Transformer), one-process
NCCL torchrun, decoding on the GPU vs the CPU, VLM rebuilds in float16 / bfloat16, LoRA tuning in
bfloat16, and a real CUDA out-of-memory answered with its message. Prints a table (and writes it to
--out). Run: python benchmarks/gpu_check.py [--out gpu_check.md]. Needs a CUDA GPU; about 3 minutes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
ROWS: list[tuple[str, str, str]] = []


def cli(*args: str, torchrun: bool = False, before: str = "") -> tuple[subprocess.CompletedProcess, float]:
    """``python -m captionlab.cli ARGS`` (under torchrun, or after the Python statement ``before``)."""
    head = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"]
        if torchrun
        else [sys.executable, "-m"]
    )
    cmd = [*head, "captionlab.cli", *args]
    if before:
        cmd = [
            sys.executable,
            "-c",
            f"{before}; import sys; from captionlab.cli import main; sys.exit(main({list(args)!r}))",
        ]
    start = time.perf_counter()
    run = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "code"), os.environ.get("PYTHONPATH", "")])},
    )
    return run, time.perf_counter() - start


def check(name: str, run: subprocess.CompletedProcess, seconds: float, ok: bool, detail: str) -> None:
    status = "ok" if run.returncode == 0 and ok else f"FAILED (exit {run.returncode})"
    if status != "ok":
        detail += " | " + (run.stderr or run.stdout)[-600:].replace("\n", " / ")
    ROWS.append((name, status, f"{seconds:.1f} s; {detail}"))
    print(f"{name}: {status} {seconds:.1f} s {detail}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check.md")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU")
    head = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(head, flush=True)
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "data"
    config = tmp / "data.yaml"
    config.write_text(f"data:\n  format: synthetic\n  path: {data}\n  synthetic_n: 200\n  image_size: 64\n")
    run, _ = cli("synth", "--out", str(data), "--n", "200")
    assert run.returncode == 0, run.stderr
    common = [
        f"data.path={data}",
        "data.synthetic_n=200",
        f"train.output_dir={tmp / 'runs'}",
        "train.device=cuda",
        "--no-progress",
    ]

    # 1. AMP training on the GPU, then the same checkpoint decoded on the GPU and on the CPU
    run, s = cli(
        "train", "code/configs/tiny/cnn_gru.yaml", *common, "train.amp=true", "train.epochs=2", "train.run_name=amp_gru"
    )
    log = (tmp / "runs" / "amp_gru" / "log.csv").read_text().splitlines() if run.returncode == 0 else []
    check(
        "cnn_gru train, AMP, cuda",
        run,
        s,
        len(log) == 3,
        f"{len(log) - 1} epochs logged; last: {log[-1] if log else ''}",
    )
    from captionlab import load_checkpoint
    from captionlab.data.images import load_image

    images = [load_image(p) for p in sorted((data / "images").glob("*.png"))[:32]]
    ckpt = tmp / "runs" / "amp_gru" / "best.pt"
    if ckpt.is_file():
        start = time.perf_counter()
        gpu = [r for r in load_checkpoint(ckpt, "cuda").caption(images, beam_size=3)]
        cpu = [r for r in load_checkpoint(ckpt, "cpu").caption(images, beam_size=3)]
        same = sum(g == c for g, c in zip(gpu, cpu))
        ok = same >= 30  # float rounding may flip a near-tie in a beam
        ROWS.append(
            (
                "beam 3 on cuda vs cpu, same checkpoint",
                "ok" if ok else "FAILED",
                f"{time.perf_counter() - start:.1f} s; {same}/32 captions identical",
            )
        )

    # 2. ViT + Transformer decoder with AMP; one-process torchrun over NCCL
    run, s = cli(
        "train",
        "code/configs/tiny/vit_transformer.yaml",
        *common,
        "train.amp=true",
        "train.epochs=1",
        "train.run_name=amp_vit",
    )
    check(
        "vit_transformer train, AMP, cuda", run, s, (tmp / "runs" / "amp_vit" / "best.pt").is_file(), "best.pt written"
    )
    run, s = cli(
        "train", "code/configs/tiny/cnn_gru.yaml", *common, "train.epochs=1", "train.run_name=nccl", torchrun=True
    )
    check(
        "cnn_gru under torchrun (NCCL, 1 GPU)", run, s, (tmp / "runs" / "nccl" / "best.pt").is_file(), "best.pt written"
    )

    # 3. vision-language models: rebuilds in half precision, LoRA in bfloat16, real out-of-memory
    from captionlab.config import load_config
    from captionlab.data.adapters import load_dataset
    from captionlab.vlm.records import read_records
    from captionlab.vlm.tiny import save_tiny_vlm

    texts = [c for r in load_dataset(load_config(config).data).split("train") for c in r.captions]
    for kind in ("instructblip", "blip2", "llava"):
        save_tiny_vlm(kind, tmp / "vlm" / kind, texts, lm_steps=100)

    def rebuild(kind: str, out: Path, *extra: str, before: str = "") -> tuple[subprocess.CompletedProcess, float]:
        """``captionlab rebuild`` of the check's 200 images with the tiny model of ``kind``."""
        model = ["--model", str(tmp / "vlm" / kind)]
        return cli("rebuild", "--vlm", kind, *model, "--images", str(config), "--out", str(out), *extra, before=before)

    for kind, dtype in (("instructblip", "float16"), ("blip2", "float16"), ("llava", "float16"), ("llava", "bfloat16")):
        out = tmp / f"{kind}_{dtype}.jsonl"
        run, s = rebuild(kind, out, "--dtype", dtype, "--batch-size", "64", "--no-progress")
        recs = read_records(out)[1] if out.is_file() else []
        check(
            f"rebuild {kind} {dtype}, cuda",
            run,
            s,
            len({r["image"] for r in recs}) == 200,
            f"{len(recs)} records; first: {recs[0]['caption'][:40]!r}" if recs else "no records",
        )
    lora = tmp / "lora"
    run, s = cli(
        "vlm-finetune",
        "--vlm",
        "llava",
        "--model",
        str(tmp / "vlm" / "llava"),
        "--data",
        str(config),
        "--out",
        str(lora),
        "--max-steps",
        "40",
        "--batch-size",
        "16",
        "--no-progress",
    )
    check(
        "vlm-finetune llava LoRA, bfloat16 (auto), cuda",
        run,
        s,
        (lora / "adapter_model.safetensors").is_file(),
        run.stdout.strip()[-80:],
    )
    out = tmp / "lora.jsonl"
    run, s = rebuild("llava", out, "--adapter", str(lora), "--no-progress")
    check(
        "rebuild llava + adapter, float16, cuda",
        run,
        s,
        out.is_file(),
        (read_records(out)[1][0]["caption"][:50] if out.is_file() else ""),
    )
    # leave ~40 MB free, then ask for a batch far too big for it
    hog = "import torch; f,_ = torch.cuda.mem_get_info(); torch.cuda.caching_allocator_alloc(int(f - 40e6))"
    run, s = rebuild(
        "llava", tmp / "oom.jsonl", "--batch-size", "200", "--max-new-tokens", "200", "--no-progress", before=hog
    )
    said = "out of memory at batch size 200" in run.stderr
    ROWS.append(
        (
            "rebuild, CUDA out of memory",
            "ok" if run.returncode == 2 and said else f"FAILED (exit {run.returncode})",
            f"{s:.1f} s; " + " / ".join(run.stderr.strip().splitlines()[-3:])[-300:],
        )
    )

    table = [f"GPU check on {head}", "", "| check | result | detail |", "|---|---|---|"] + [
        f"| {n} | {r} | {d} |" for n, r, d in ROWS
    ]
    Path(a.out).write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
