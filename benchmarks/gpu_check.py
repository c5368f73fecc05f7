"""The GPU paths, end to end on a CUDA machine: AMP training (CNN+GRU, ViT+Transformer), one-process
NCCL torchrun, decoding on the GPU vs the CPU, VLM rebuilds in float16 / bfloat16, LoRA tuning in
bfloat16, the eight notebooks executed on the device, and a real CUDA out-of-memory answered with its
message. Prints a table (and writes it to --out). Run: python benchmarks/gpu_check.py [--out gpu_check.md].
Needs a CUDA GPU."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
ROWS: list[tuple[str, str, str]] = []


def package_env() -> dict[str, str]:
    """This environment with the checkout's package first on the path (what every CLI run here gets)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "code"), os.environ.get("PYTHONPATH", "")])}


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
        env=package_env(),
    )
    return run, time.perf_counter() - start


def check(name: str, run: subprocess.CompletedProcess, seconds: float, ok: bool, detail: str) -> None:
    status = "ok" if run.returncode == 0 and ok else f"FAILED (exit {run.returncode})"
    if status != "ok":
        detail += " | " + (run.stderr or run.stdout)[-600:].replace("\n", " / ")
    ROWS.append((name, status, f"{seconds:.1f} s; {detail}"))
    print(f"{name}: {status} {seconds:.1f} s {detail}", flush=True)


SECTIONS = ("train", "attention", "clip", "resume", "vlm", "notebooks", "oom")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check.md")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--work", help="working folder, kept (default: a new temporary one); a later call can reuse it")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU")
    head = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(head, flush=True)
    tmp = Path(a.work or tempfile.mkdtemp())
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    config = tmp / "data.yaml"
    config.write_text(f"data:\n  format: synthetic\n  path: {data}\n  synthetic_n: 200\n  image_size: 64\n")
    if not (data / "dataset_synthetic.json").is_file():
        run, _ = cli("synth", "--out", str(data), "--n", "200")
        assert run.returncode == 0, run.stderr
    common = [
        f"data.path={data}",
        "data.synthetic_n=200",
        f"train.output_dir={tmp / 'runs'}",
        "train.device=cuda",
        "--no-progress",
    ]
    for name in a.sections.split(","):
        start = time.perf_counter()
        try:
            globals()[f"check_{name}"](tmp, data, config, common)
        except Exception as e:  # one broken section must not hide the others' rows
            ROWS.append((f"section {name}", f"FAILED ({type(e).__name__})", str(e)[-300:].replace("\n", " / ")))
        print(f"[section {name}: {time.perf_counter() - start:.0f} s]", flush=True)
        write_table(a.out, head)
    print(Path(a.out).read_text())


def write_table(out: str, head: str) -> None:
    table = [f"GPU check on {head}", "", "| check | result | detail |", "|---|---|---|"] + [
        f"| {n} | {r} | {d} |" for n, r, d in ROWS
    ]
    Path(out).write_text("\n".join(table) + "\n")


def compare_devices(name: str, ckpt: Path | list[Path], images: list) -> None:
    """The same checkpoint(s) decoded with beam 3 on the GPU and on the CPU."""
    from captionlab import load_checkpoint

    paths = [str(p) for p in ckpt] if isinstance(ckpt, list) else str(ckpt)
    start = time.perf_counter()
    gpu = load_checkpoint(paths, "cuda").caption(images, beam_size=3)
    cpu = load_checkpoint(paths, "cpu").caption(images, beam_size=3)
    same = sum(g == c for g, c in zip(gpu, cpu))
    ok = same >= len(images) - 2  # float rounding may flip a near-tie in a beam
    ROWS.append(
        (
            name,
            "ok" if ok else "FAILED",
            f"{time.perf_counter() - start:.1f} s; {same}/{len(images)} captions identical; first: {gpu[0]!r}",
        )
    )


def test_images(data: Path, n: int = 32) -> list:
    from captionlab.data.images import load_image

    return [load_image(p) for p in sorted((data / "images").glob("*.png"))[:n]]


def check_train(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """AMP training (CNN+GRU, ViT+Transformer), decoding on the GPU vs the CPU, one-process NCCL."""
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
    compare_devices(
        "cnn_gru beam 3 on cuda vs cpu, same checkpoint", tmp / "runs" / "amp_gru" / "best.pt", test_images(data)
    )
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


def last_row(run_dir: Path) -> dict[str, str]:
    rows = list(csv.DictReader((run_dir / "log.csv").open())) if (run_dir / "log.csv").is_file() else []
    return rows[-1] if rows else {}


def brief(row: dict[str, str], *keys: str) -> str:
    return ", ".join(f"{k} {float(row[k]):.3f}" for k in keys if row.get(k, "") != "")


def trained(
    label: str,
    runs: Path,
    command: str,
    config: str,
    name: str,
    epochs: int,
    metric: str,
    *extra: str,
    torchrun: bool = False,
) -> None:
    """``captionlab COMMAND CONFIG`` for ``epochs`` (AMP, on the GPU); checks that every epoch was logged."""
    args = [*extra, "train.amp=true", f"train.epochs={epochs}", f"train.run_name={name}"]
    run, s = cli(command, config, *args, torchrun=torchrun)
    row = last_row(runs / name)
    check(label, run, s, row.get("epoch") == str(epochs), brief(row, "train_loss", metric))


def check_attention(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """Show-Attend-Tell from a frozen 'pretrained' ResNet through the feature cache, then its last stage
    fine-tuned (AMP); adaptive attention (AMP); both decoded on cuda vs cpu and as an ensemble; the
    attention plot on cuda; SCST (AMP) from the Show-Attend-Tell checkpoint."""
    from torchvision.models import resnet18

    weights = tmp / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), weights)  # stands in for ImageNet weights: loaded, then frozen
    runs = tmp / "runs"
    stages = ["model.encoder.name=resnet18", "model.encoder.pretrained=true", f"model.encoder.weights={weights}"]
    stages += ["train.feature_cache=true"]
    stages += ["train.fine_tune_from_epoch=3", "train.fine_tune_blocks=1", "train.epochs=4"]
    run, s = cli("train", "code/configs/tiny/attention.yaml", *common, "train.amp=true", *stages, "train.run_name=sat")
    caches = list((tmp / "cache").glob("*.npy"))
    row = last_row(runs / "sat")
    check(
        "show_attend_tell: feature cache (epochs 1-2), last stage fine-tuned (3-4), AMP, cuda",
        run,
        s,
        row.get("epoch") == "4" and len(caches) == 1,
        f"{len(caches)} cache file; epoch 4: {brief(row, 'train_loss', 'CIDEr')}",
    )
    label = "adaptive_attention train, AMP, cuda"
    trained(label, runs, "train", "code/configs/tiny/adaptive.yaml", "ada", 4, "CIDEr", *common)
    images = test_images(data)
    compare_devices("show_attend_tell beam 3 on cuda vs cpu", runs / "sat" / "best.pt", images)
    compare_devices(
        "ensemble (show_attend_tell + adaptive) beam 3 on cuda vs cpu",
        [runs / "sat" / "best.pt", runs / "ada" / "best.pt"],
        images,
    )
    image = sorted((data / "images").glob("*.png"))[0]
    plot = tmp / "attention.png"
    run, s = cli(
        "caption", str(runs / "ada" / "best.pt"), str(image), "--attention-plot", str(plot), "--device", "cuda"
    )
    check("caption --attention-plot (adaptive), cuda", run, s, plot.is_file(), run.stdout.strip()[-80:])
    scst = [f"train.init_from={runs / 'sat' / 'best.pt'}", "data.image_size=96", "train.scst_samples=4"]
    label = "SCST from show_attend_tell, AMP, cuda"
    trained(label, runs, "train", "code/configs/tiny/scst.yaml", "scst", 1, "CIDEr", *common, *scst)


def check_clip(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """Contrastive pre-training under torchrun (NCCL gather), clip_gpt from it, ClipCap over a tiny
    GPT-2 (Hugging Face classes under autocast)."""
    runs = tmp / "runs"
    label = "pretrain under torchrun (NCCL), AMP, cuda"
    trained(label, runs, "pretrain", "code/configs/tiny/pretrain.yaml", "pre", 2, "mean_recall", *common, torchrun=True)
    clip = [f"model.pretrained_from={runs / 'pre' / 'best.pt'}"]
    label = "clip_gpt from the pre-training, AMP, cuda"
    trained(label, runs, "train", "code/configs/tiny/clip_gpt.yaml", "clip_gpt", 2, "CIDEr", *common, *clip)
    hf = [f"model.clip={tmp / 'hf' / 'clip'}", f"model.lm={tmp / 'hf' / 'gpt2'}"]
    run, s = cli("tiny-hf", "code/configs/tiny/clipcap_mlp.yaml", *common[:2], *hf)
    check("tiny-hf (tiny CLIP + GPT-2 written)", run, s, (tmp / "hf" / "gpt2").is_dir(), "")
    label = "clipcap (MLP, GPT-2 tuned), feature cache, AMP, cuda"
    trained(label, runs, "train", "code/configs/tiny/clipcap_mlp.yaml", "clipcap", 2, "CIDEr", *common, *hf)
    if (runs / "clipcap" / "best.pt").is_file():
        compare_devices("clipcap beam 3 on cuda vs cpu", runs / "clipcap" / "best.pt", test_images(data, 16))


RESUME_TOLERANCE = 0.02  # step loss (cross-entropy per token, ~1-4 here): a resume that lost state differs far more


def check_resume(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """SIGTERM mid-epoch under AMP on the GPU, --resume, against an uninterrupted run (GradScaler state,
    CUDA RNG, sampler position). GPU kernels (atomic adds in backward) need not repeat bit for bit, so
    a second uninterrupted run gives the floor; the resumed run's step losses must stay within that floor
    plus RESUME_TOLERANCE of the uninterrupted run's (final weights drift apart under AMP even between two
    uninterrupted runs, so they are shown, not judged)."""
    runs = tmp / "runs"
    args = ["code/configs/tiny/cnn_gru.yaml", *common, "train.amp=true", "data.synthetic_n=200", "train.batch_size=8"]
    args += ["train.epochs=2", "train.save_every_steps=1", "train.log_every=1", "train.seed=3"]
    for name in ("straight", "again"):
        run, s = cli("train", *args, f"train.run_name={name}")
        check(f"uninterrupted run ({name}), AMP, cuda", run, s, (runs / name / "last.pt").is_file(), "")
    cmd = [sys.executable, "-m", "captionlab.cli", "train", *args, "train.run_name=stopped"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=package_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps = runs / "stopped" / "steps.csv"
    while proc.poll() is None and (not steps.is_file() or len(steps.read_text().splitlines()) < 12):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    run, s = cli("train", *args, "train.run_name=stopped", "--resume")
    floor, floor_loss = differences(runs / "straight", runs / "again")
    diff, loss = differences(runs / "straight", runs / "stopped")
    check(
        "SIGTERM mid-epoch + --resume, AMP, cuda, vs uninterrupted",
        run,
        time.perf_counter() - start,
        proc.returncode == 143 and loss <= floor_loss + RESUME_TOLERANCE,
        f"stopped exit {proc.returncode}; largest step-loss / weight difference to the uninterrupted run "
        f"{loss:.2e} / {diff:.2e}; between two uninterrupted runs {floor_loss:.2e} / {floor:.2e}; passes if the "
        f"step losses differ by at most the uninterrupted runs' difference + {RESUME_TOLERANCE}",
    )


def differences(a: Path, b: Path) -> tuple[float, float]:
    """Largest difference of two runs' final weights and of their logged step losses (inf: missing)."""
    if not (a / "last.pt").is_file() or not (b / "last.pt").is_file():
        return float("inf"), float("inf")
    x = torch.load(a / "last.pt", map_location="cpu", weights_only=True)["model"]
    y = torch.load(b / "last.pt", map_location="cpu", weights_only=True)["model"]
    weights = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
    la, lb = ([float(r["loss"]) for r in csv.DictReader((r / "steps.csv").open())] for r in (a, b))
    return weights, max(abs(u - v) for u, v in zip(la, lb)) if len(la) == len(lb) else float("inf")


def check_vlm(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """Rebuilds in half precision, LoRA in bfloat16, a real CUDA out-of-memory answered with its message."""
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


def check_notebooks(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """All eight notebooks top to bottom on the tiny configs, on the GPU (their default device, auto, is
    cuda here): any tensor a cell builds on the CPU for a model on cuda fails its notebook."""
    from captionlab.notebooks import NOTEBOOKS, execute, tiny_env

    for name in NOTEBOOKS:
        start = time.perf_counter()
        work = tmp / "notebooks" / ("05_06" if name[:2] in ("05", "06") else name[:2])  # 06 reads what 05 wrote
        try:
            execute(name, {**tiny_env(name, work), "PYTHONPATH": package_env()["PYTHONPATH"]})
            ok, detail = True, ""
        except Exception as e:  # nbclient's CellExecutionError carries the cell's traceback
            ok, detail = False, str(e).strip().splitlines()[-1][-300:]
        ROWS.append(
            (f"notebook {name} on cuda", "ok" if ok else "FAILED", f"{time.perf_counter() - start:.0f} s; {detail}")
        )
        print(f"notebook {name}: {'ok' if ok else 'FAILED'} {detail}", flush=True)


def check_oom(tmp: Path, data: Path, config: Path, common: list[str]) -> None:
    """A real CUDA out-of-memory in rebuild, answered with its message (alone on the GPU: it fills it)."""
    if not (tmp / "vlm" / "llava").is_dir():
        from captionlab.config import load_config
        from captionlab.data.adapters import load_dataset
        from captionlab.vlm.tiny import save_tiny_vlm

        texts = [c for r in load_dataset(load_config(config).data).split("train") for c in r.captions]
        save_tiny_vlm("llava", tmp / "vlm" / "llava", texts, lm_steps=100)
    # leave ~40 MB free, then ask for a batch far too big for it
    hog = "import torch; f,_ = torch.cuda.mem_get_info(); torch.cuda.caching_allocator_alloc(int(f - 40e6))"
    model = ["--vlm", "llava", "--model", str(tmp / "vlm" / "llava"), "--images", str(config)]
    run, s = cli(
        "rebuild",
        *model,
        "--out",
        str(tmp / "oom.jsonl"),
        "--batch-size",
        "200",
        "--max-new-tokens",
        "200",
        "--no-progress",
        before=hog,
    )
    said = "out of memory at batch size 200" in run.stderr
    ROWS.append(
        (
            "rebuild, CUDA out of memory",
            "ok" if run.returncode == 2 and said else f"FAILED (exit {run.returncode})",
            f"{s:.1f} s; " + " / ".join(run.stderr.strip().splitlines()[-3:])[-300:],
        )
    )


if __name__ == "__main__":
    main()
