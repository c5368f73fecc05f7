"""Dataset rebuild with vision-language models (issue 8): tiny random InstructBLIP / BLIP-2 / LLaVA of
the real classes and processors, written with save_pretrained and loaded back through ``--model DIR``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from captionlab.cli import main
from captionlab.vlm.models import VLM, load_vlm
from captionlab.vlm.rebuild import clean_caption
from captionlab.vlm.records import read_records
from conftest import ROOT, shared_dir, torchrun

KINDS = ("instructblip", "blip2", "llava")
PROMPT = "Please describe this image in deepfashion dataset style."


@pytest.fixture(scope="session")
def vlm_data(tmp_path_factory) -> Path:
    """A 40-image synthetic set and its run config (tiny VLMs read its training captions); made once for
    every test worker, with the tiny InstructBLIP, BLIP-2 and LLaVA beside it."""

    def make(root: Path) -> None:
        config = root / "data.yaml"
        config.write_text(f"data:\n  format: synthetic\n  path: {root / 'data'}\n  synthetic_n: 40\n  image_size: 64\n")
        assert main(["tiny-vlm", "--data", str(config), "--out", str(root / "models"), "--lm-steps", "60"]) == 0

    return shared_dir(tmp_path_factory, "vlm", make) / "data.yaml"


@pytest.fixture(scope="session")
def tiny_vlms(vlm_data) -> Path:
    return vlm_data.parent / "models"


def rebuild(tiny_vlms: Path, data: Path, kind: str, out: Path, *extra: str) -> int:
    args = ["rebuild", "--vlm", kind, "--model", str(tiny_vlms / kind), "--images", str(data), "--out", str(out)]
    return main([*args, "--prompt", PROMPT, "--max-new-tokens", "12", "--no-progress", *extra])


def keys(path: Path) -> list[str]:
    return [r["image"] for r in read_records(path, repair=False)[1]]


def all_images(data: Path) -> list[str]:
    return sorted(p.relative_to(data.parent / "data").as_posix() for p in (data.parent / "data").rglob("*.png"))


@pytest.mark.parametrize("kind", KINDS)
def test_rebuild_end_to_end(kind, tiny_vlms, vlm_data, tmp_path, capsys, monkeypatch):
    calls = []
    generate = VLM.generate
    monkeypatch.setattr(
        VLM, "generate", lambda self, inputs, **g: calls.append(len(inputs["input_ids"])) or generate(self, inputs, **g)
    )
    out = tmp_path / "rebuilt.jsonl"
    assert rebuild(tiny_vlms, vlm_data, kind, out, "--batch-size", "16", "--preset", "creative") == 0
    header, records = read_records(out)
    assert header["vlm"] == kind and header["prompt"] == PROMPT and header["preset"] == "creative"
    assert header["generation"]["temperature"] == 0.9 and header["versions"]["transformers"]
    assert sorted(keys(out)) == all_images(vlm_data)  # every image, once
    assert calls[0] == 16 and len(calls) <= 6  # batches of 16 (+ one retry each at most), not one image a call
    assert all(bool(r["caption"]) != bool(r.get("empty")) for r in records)  # a caption, or marked empty: not both
    assert any(r["caption"] for r in records)
    assert all(r["caption"] == " ".join(r["caption"].split()) and "<" not in r["caption"] for r in records)
    capsys.readouterr()
    assert rebuild(tiny_vlms, vlm_data, kind, out, "--preset", "creative") == 0  # done: nothing redone
    assert "nothing left to caption" in capsys.readouterr().out
    assert keys(out) == [r["image"] for r in records]
    assert rebuild(tiny_vlms, vlm_data, kind, out, "--preset", "precise") == 2  # other settings: refused
    err = capsys.readouterr().err
    assert "different rebuild" in err and "preset: 'creative' there, 'precise' now" in err and "--overwrite" in err
    assert rebuild(tiny_vlms, vlm_data, kind, out, "--preset", "precise", "--overwrite") == 0
    assert read_records(out)[0]["preset"] == "precise" and sorted(keys(out)) == all_images(vlm_data)
    assert rebuild(tiny_vlms, vlm_data, kind, out, "--preset", "precise", "--dtype", "bfloat16") == 2
    assert "dtype: 'auto' there, 'bfloat16' now" in capsys.readouterr().err  # another precision is another rebuild


def test_clean_caption_strips_echoes_specials_and_extra_sentences():
    specials = ["</s>", "<pad>"]
    assert clean_caption(" ASSISTANT:  a red  box.</s><pad>", "Describe.", specials) == "a red box."
    assert clean_caption("Describe it. A dog runs. It is brown.", "describe it.", specials, 1) == "A dog runs."
    assert clean_caption("Answer: </s>", "q", specials) == ""


def test_empty_answers_are_retried_once_and_flagged(tiny_vlms, vlm_data, tmp_path, monkeypatch):
    answers = iter([["", "a red box"] + ["x"] * 14, ["a blue disc"]] + [[""] * 16, [""] * 16] * 3)
    monkeypatch.setattr(VLM, "generate", lambda self, inputs, **g: next(answers)[: len(inputs["input_ids"])])
    out = tmp_path / "r.jsonl"
    assert rebuild(tiny_vlms, vlm_data, "llava", out, "--batch-size", "16") == 0
    records = read_records(out)[1]
    assert records[0]["caption"] == "a blue disc" and records[0]["retried"] and "empty" not in records[0]
    assert records[1]["caption"] == "a red box" and "retried" not in records[1]
    assert records[16]["empty"] and records[16]["retried"]


def test_clear_errors_for_missing_dir_wrong_type_and_out_of_memory(tiny_vlms, vlm_data, tmp_path, capsys, monkeypatch):
    assert rebuild(tiny_vlms.parent / "nowhere", vlm_data, "llava", tmp_path / "a.jsonl") == 2
    assert "directory not found" in capsys.readouterr().err
    args = ["rebuild", "--vlm", "blip2", "--model", str(tiny_vlms / "llava"), "--images", str(vlm_data)]
    assert main([*args, "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "holds a 'llava' model (config.json model_type), not blip2: pass --vlm llava" in capsys.readouterr().err

    for error in (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ):
        monkeypatch.setattr(VLM, "generate", lambda self, inputs, e=error, **g: (_ for _ in ()).throw(e))
        assert rebuild(tiny_vlms, vlm_data, "llava", tmp_path / "c.jsonl", "--batch-size", "8") == 2
        err = capsys.readouterr().err
        assert "out of memory at batch size 8: lower --batch-size (e.g. 4)" in err and "--load-in-8bit" in err


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "code")}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "captionlab.cli", *args]


def test_killed_rebuild_resumes_with_every_image_once(tiny_vlms, vlm_data, tmp_path):
    out = tmp_path / "killed.jsonl"
    cmd = cli(
        "rebuild", "--vlm", "instructblip", "--model", str(tiny_vlms / "instructblip"), "--images", str(vlm_data),
        "--out", str(out), "--batch-size", "1", "--max-new-tokens", "40", "--no-progress", "--preset", "creative",
    )  # fmt: skip
    for wait_for in (3, 12):
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and len(keys(out) if out.exists() else []) < wait_for:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]  # killed mid-run, not finished
        with out.open("a") as f:
            f.write('{"type": "caption", "image": "images/synth_0')  # as if killed inside a write
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text().endswith("}\n")  # the torn line is gone
    assert sorted(keys(out)) == all_images(vlm_data)  # each image exactly once


def test_two_process_rebuild_shards_and_resumes_per_shard(tiny_vlms, vlm_data, tmp_path):
    out = tmp_path / "shared.jsonl"
    images = all_images(vlm_data)
    args = [
        "rebuild", "--vlm", "llava", "--model", str(tiny_vlms / "llava"), "--images", str(vlm_data), "--out",
        str(out), "--batch-size", "4", "--max-new-tokens", "8", "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    # rank 1 of an earlier run got through two images before it stopped: they are not captioned again
    first = subprocess.run(cli(*args), env=env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    header, records = read_records(out)
    part = out.with_name(f"{out.name}.part-1-of-2")
    kept = [r | {"caption": "kept from before"} for r in records[1:4:2]]
    part.write_text("".join(json.dumps(r) + "\n" for r in [header, *kept]))
    out.unlink()
    done = subprocess.run(
        torchrun("-m", "captionlab.cli", *args), env=env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    merged = read_records(out)[1]
    assert [r["image"] for r in merged] == [r["image"] for r in records]  # every image once, in source order
    assert sorted(r["image"] for r in merged) == images
    assert [r["caption"] for r in merged if r["caption"] == "kept from before"] == ["kept from before"] * 2
    assert not list(tmp_path.glob("*.part-*"))


@pytest.mark.parametrize("kind", ["llava", "instructblip"])  # a chat template; a Q-Former that reads the prompt
def test_lora_finetune_changes_adapters_and_rebuild_uses_them(kind, tiny_vlms, vlm_data, tmp_path, capsys):
    from safetensors.torch import load_file

    from captionlab.vlm.models import KINDS

    adapter = tmp_path / "lora"
    args = ["vlm-finetune", "--vlm", kind, "--model", str(tiny_vlms / kind), "--data", str(vlm_data)]
    assert main([*args, "--out", str(adapter), "--max-steps", "6", "--batch-size", "4", "--no-progress"]) == 0
    assert "6 steps, loss" in capsys.readouterr().out
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: training moved it
    assert any(KINDS[kind].projector in k for k in weights)  # the projector is trained and saved too
    assert json.loads((adapter / "finetune.json").read_text())["steps"] == 6
    cpu = torch.device("cpu")
    base, tuned = (
        load_vlm(kind, tiny_vlms / kind, cpu),
        load_vlm(kind, tiny_vlms / kind, cpu, adapter=adapter),  # the adapter merged into its own model
    )
    name = next(n for n, _ in base.model.named_parameters() if "language_model" in n and "v_proj" in n)
    assert not torch.equal(dict(base.model.named_parameters())[name], dict(tuned.model.named_parameters())[name])
    out = tmp_path / "tuned.jsonl"
    assert rebuild(tiny_vlms, vlm_data, kind, out, "--adapter", str(adapter)) == 0
    assert read_records(out)[0]["adapter"] == str(adapter)


def test_lora_finetune_stopped_mid_epoch_resumes_to_the_same_adapter(tiny_vlms, vlm_data, tmp_path, monkeypatch,
                                                                     capsys):  # fmt: skip
    """SIGTERM inside the first of two epochs: vlm-finetune saves after that step and exits 143 with the
    hint; --resume then ends where an uninterrupted run ends: the same losses and adapter weights."""
    import os
    import signal

    from safetensors.torch import load_file

    import captionlab.vlm.finetune as finetune

    args = ["vlm-finetune", "--vlm", "llava", "--model", str(tiny_vlms / "llava"), "--data", str(vlm_data),
            "--epochs", "2", "--batch-size", "16", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "reference")]) == 0
    real, calls = finetune.training_batch, []

    def term_on_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during the step; the run stops after it
        return real(*a, **k)

    monkeypatch.setattr(finetune, "training_batch", term_on_the_third)
    assert main([*args, "--out", str(tmp_path / "stopped")]) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 3" in err and "--resume" in err
    assert json.loads((tmp_path / "stopped" / "finetune.json").read_text())["steps"] == 3
    monkeypatch.setattr(finetune, "training_batch", real)
    assert main([*args, "--out", str(tmp_path / "stopped"), "--resume"]) == 0
    assert "resuming after 3 steps" in capsys.readouterr().out
    ref, got = (json.loads((tmp_path / d / "finetune.json").read_text()) for d in ("reference", "stopped"))
    assert got["losses"] == ref["losses"] and got["steps"] > 3 * 2  # the whole run: two epochs
    a, b = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("reference", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main([*args, "--out", str(tmp_path / "stopped"), "--resume", "--lr", "1e-3"]) == 2
    assert "was trained with other lr" in capsys.readouterr().err


def test_a_finished_export_keeps_ids_splits_and_boxes_drops_empty_captions_and_counts(vlm_data, tmp_path, capsys):
    """`rebuild-export` of a complete records file (written here as rebuild writes it, one caption empty):
    the Karpathy JSON keeps each image's id, split and boxes, leaves the empty one out and says so, and
    stats.json counts both caption sets; the result loads back as a dataset with the new captions."""
    from captionlab.config import load_config
    from captionlab.data import load_dataset
    from captionlab.vlm.rebuild import image_keys
    from captionlab.vlm.records import RecordWriter

    source = load_dataset(load_config(vlm_data).data)
    keys_ = image_keys(source)
    rebuilt = {k: f"a rebuilt caption number {n}" for n, k in enumerate(keys_)}
    rebuilt[keys_[3]] = ""  # the model said nothing for this one
    out = tmp_path / "rebuilt.jsonl"
    with RecordWriter(out, {"type": "header", "vlm": "llava", "prompt": PROMPT, "images": str(vlm_data)}) as w:
        w.append(
            [
                {"type": "caption", "image": k, "caption": c, **({"empty": True} if not c else {})}
                for k, c in rebuilt.items()
            ]
        )
    target = tmp_path / "rebuilt" / "dataset.json"
    assert main(["rebuild-export", str(out), "--source", str(vlm_data), "--out", str(target), "--no-plot"]) == 0
    printed = capsys.readouterr()
    assert f"left out 1 image(s) whose rebuilt caption is empty (first: {keys_[3]})" in printed.err
    assert f"wrote {target} ({len(keys_) - 1} images)" in printed.out and "| rebuilt |" in printed.out
    images = json.loads(target.read_text())["images"]
    by_id = {r.image_id: r for r in source.records}
    assert len(images) == len(keys_) - 1 and source.records[3].image_id not in {im["cocoid"] for im in images}
    for im in images:
        original = by_id[im["cocoid"]]
        assert im["split"] == original.split and im.get("objects", []) == original.objects
        assert im["sentences"][0]["raw"] == rebuilt[keys_[source.records.index(original)]]
    stats = json.loads(target.with_name("stats.json").read_text())
    assert stats["rebuilt"]["captions"] == len(keys_) - 1
    assert stats["original"]["captions"] == sum(len(r.captions) for r in source.records)
    again = load_dataset(load_config(None, ["data.format=karpathy", f"data.path={target}"]).data)
    assert sorted(r.path.resolve() for r in again.records) == sorted(
        r.path.resolve() for i, r in enumerate(source.records) if i != 3
    )
    from test_report import page_data

    page = target.with_name("report.html")  # old against new per image, under the statistics it printed
    assert f", {page}" in printed.out and "<td>rebuilt</td>" in page.read_text()
    data = page_data(page)
    assert data["labels"] == {"caption": "rebuilt caption", "refs": "original captions"}
    assert {r["id"]: (r["caption"], r["refs"]) for r in data["rows"]} == {
        r.image_id: (rebuilt[keys_[i]], list(r.captions)) for i, r in enumerate(source.records) if i != 3
    }
    assert all(r["thumb"].startswith("data:image/jpeg;base64,") for r in data["rows"])


def test_folder_source_bad_images_and_an_unfinished_export(tiny_vlms, vlm_data, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(sorted((vlm_data.parent / "data" / "images").glob("*.png"))[:3]):
        (folder / ("sub" if i else ".") / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "folder.jsonl"
    args = [
        "rebuild",
        "--vlm",
        "blip2",
        "--model",
        str(tiny_vlms / "blip2"),
        "--images",
        str(folder),
        "--out",
        str(out),
    ]
    assert main([*args, "--no-progress"]) == 2
    assert "broken.jpg" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--no-progress", "--on-bad-image", "skip", "--max-sentences", "1"]) == 0
    assert sorted(keys(out)) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    # an export needs every image of its source: a rebuild of 3 images cannot stand for the 40-image set
    assert main(["rebuild-export", str(out), "--source", str(vlm_data), "--out", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err
    assert "40 of 40 images" in err and "have no record" in err and "rerun the same command" in err


def test_finetune_refuses_an_out_folder_that_holds_a_run(tmp_path, capsys):
    """Without --resume, the first save used to replace the adapter already there."""
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"a week of fine-tuning")
    args = ["vlm-finetune", "--vlm", "llava", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d")]
    assert main([*args, "--out", str(out)]) == 2
    assert "already holds a fine-tuning run; pass --resume" in capsys.readouterr().err
    assert (out / "adapter_model.safetensors").read_bytes() == b"a week of fine-tuning"
