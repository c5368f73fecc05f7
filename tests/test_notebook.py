"""The notebooks run top to bottom, headless, with the tiny config, and touch only their own runs."""

from __future__ import annotations

import json

import nbformat
import pytest

from captionlab.notebooks import execute, outputs_text, tiny_env
from conftest import CHILD_ENV, ROOT

pytestmark = pytest.mark.slow


def run_notebook(name: str, tmp_path, photos=None) -> nbformat.NotebookNode:
    env = tiny_env(name, tmp_path, photos)
    env.update(CHILD_ENV)  # a kernel takes as many torch threads as the worker that starts it
    return execute(name, env)


def test_cnn_gru_notebook_executes_and_leaves_other_runs_alone(tmp_path):
    cli_run = tmp_path / "runs" / "tiny_cnn_gru"  # what `captionlab train` of the same config would use
    cli_run.mkdir(parents=True)
    (cli_run / "last.pt").write_bytes(b"a user's checkpoint")
    nb = run_notebook("01_cnn_gru.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "CIDEr" in text and "METEOR" in text and "attribute accuracy" in text and "blind floor" in text
    assert "IProgress" not in text and "\r" not in text
    ev = tmp_path / "runs" / "nb01_cnn_gru" / "eval_test_beam3"
    metrics = json.loads((ev / "metrics.json").read_text())["metrics"]["attribute_accuracy"]
    # the notebook's table is what the package computes from the captions it wrote (not just any number)
    from captionlab.config import load_config
    from captionlab.data import load_dataset
    from captionlab.metrics.attributes import attribute_accuracy

    captions = {r["image_id"]: r["caption"] for r in json.loads((ev / "results.json").read_text())}
    records = load_dataset(load_config(ev.parent / "config.yaml").data).split("test")
    assert metrics["accuracy"] == attribute_accuracy(captions, records)["accuracy"]
    assert f"{metrics['accuracy']['overall']:.3f}" in text  # and it is the number shown
    assert (cli_run / "last.pt").read_bytes() == b"a user's checkpoint"
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) >= 3  # data grid, curves, captions under images
    assert len(nbformat.writes(nb)) < 300_000  # outputs stay small: no progress-bar spam


def test_self_critical_notebook_executes(tmp_path):
    """The synthetic walk, then its real-photo section on the synthetic stand-in (the suite's time; on the
    photographs, the same configs are benchmarks/real_photos.py's sat and sat_scst arms)."""
    nb = run_notebook("03_self_critical.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "SCST, greedy baseline beam 3" in text and "SCST, mean baseline beam 1" in text and "METEOR" in text
    for run in ("nb03_xe", "nb03_scst_greedy", "nb03_scst_mean", "nb03_real_xe", "nb03_real_scst"):
        assert (tmp_path / "runs" / run / "best.pt").is_file()
    assert (tmp_path / "runs" / "nb03_scst_mean" / "steps.csv").is_file()
    page = tmp_path / "runs" / "nb03_scst_greedy" / "eval_test_beam3" / "compare_eval_test_beam3.html"
    assert f"image by image: {page}" in text and "nb03_xe" in page.read_text()  # SCST against cross-entropy
    assert "photos, SCST beam 3" in text and "distinct captions of" in text and "not found: a tiny synthetic" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == 3  # reward curves, captions before/after, the real-photo run's reward curve


def test_grid_attention_notebook_executes(tmp_path):
    nb = run_notebook("02_grid_attention.ipynb", tmp_path)
    text = outputs_text(nb)
    assert text.count("grounding rate") == 2 and "METEOR" in text  # a 1-epoch model may ground nothing yet
    for name in ("cnn_gru", "show_tell", "show_attend_tell", "adaptive_attention"):
        assert f"| {name} beam 3 |" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == 4  # two examples x two attention models


def test_transformer_notebook_executes(tmp_path):
    """The synthetic walk, then its real-photo section (vit_transformer, and ClipCap through a pre-trained
    image tower) on the synthetic stand-in, within the suite's time."""
    nb = run_notebook("04_transformer_and_clipcap.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "| photos, vit_transformer beam 3 |" in text and "| photos, clipcap beam 3 |" in text
    assert "distinct captions of" in text and "not found: a tiny synthetic" in text
    assert (tmp_path / "runs" / "nb04_real_clipcap" / "best.pt").is_file()
    for name in ("vit_transformer", "clipcap_mlp", "clipcap_transformer"):
        assert f"| {name} beam 3 |" in text
    assert "cache on " in text and "cache off" in text and "grounding rate" in text
    assert "IProgress" not in text  # transformers' tqdm.auto import stays quiet
    assert "Chinese characters, beam 3" in text and (tmp_path / "data_zh" / "dataset_synthetic.json").is_file()
    assert (tmp_path / "hf" / "gpt2" / "tokenizer.json").is_file()  # stand-ins written where the overrides say
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == 1  # the attention panels


def test_clip_pretraining_notebook_executes(tmp_path):
    nb = run_notebook("07_clip_pretraining.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "| pre-training (val) |" in text and "chance R@1" in text and "-> synth_" in text
    assert "| val CIDEr-D | from pre-training | from scratch |" in text
    assert "| clip_gpt from pre-training beam 3 |" in text and "| clip_gpt from scratch beam 3 |" in text
    for run in ("nb07_pretrain", "nb07_clip_gpt_pretrained", "nb07_clip_gpt_scratch"):
        assert (tmp_path / "runs" / run / "best.pt").is_file()


def test_rebuild_and_retrain_notebooks_execute(tmp_path):
    nb = run_notebook("05_llm_dataset_rebuild.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "precise: 60 images" in text and "creative: 60 images" in text and "| rebuilt |" in text
    assert (tmp_path / "data_rebuilt_precise" / "dataset.json").is_file()
    assert (tmp_path / "rebuild" / "nb05" / "lora" / "adapter_model.safetensors").is_file()
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == 4  # loss curve, statistics, old/new captions x2
    nb = run_notebook("06_retrain.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "| trained on precise |" in text and "CIDEr vs creative" in text and "original reference:" in text
    for run in ("nb06_original", "nb06_precise", "nb06_creative"):
        assert (tmp_path / "runs" / run / "best.pt").is_file()
    page = tmp_path / "runs" / "nb06_precise" / "eval_test_beam3" / "compare_eval_test_beam3.html"
    assert f"original references: {page}" in text and "nb06_original" in page.read_text()


@pytest.mark.xdist_group("flickr_small")  # the worker of the other tests on these photos: their feature cache
def test_real_photos_notebook_executes_on_the_subset_or_a_stand_in(tmp_path, request):
    """On a few hundred Flickr8k photos where ../shared/flickr8k_subset is present, else on the tiny
    synthetic stand-in; and the saved notebook holds no Flickr photograph (captions only)."""
    from conftest import SUBSET, share_cache

    photos = request.getfixturevalue("flickr_small") if (SUBSET / "dataset_flickr8k.json").is_file() else None
    if photos:
        share_cache(photos, tmp_path)
    nb = run_notebook("08_real_photos.ipynb", tmp_path, photos)
    text = outputs_text(nb)
    assert "show_attend_tell, efficientnet_lite0 ImageNet (frozen)" in text and "blind:" in text and "METEOR" in text
    assert "retrieval_transformer, efficientnet_lite0" in text and "knn: consensus" in text
    assert "skimage.data.chelsea():" in text and "rocket.webp:" in text and "astronaut.tif:" in text
    for run in ("nb08_show_attend_tell", "nb08_retrieval"):  # scored on the test split, which chose nothing
        assert (tmp_path / "runs" / run / "eval_test_beam3" / "metrics.json").is_file()
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == 4  # training curves and three heat-map figures of scikit-image photos, nothing else


def test_the_committed_real_photos_notebook_shows_no_flickr_photograph():
    nb = nbformat.read(ROOT / "code" / "08_real_photos.ipynb", as_version=4)
    images = [o for c in nb.cells for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) <= 4 and "efficientnet_lite0" in outputs_text(nb)


def test_no_notebook_builds_model_inputs_itself():
    """Cells hand images to a model only through the captioner (``batch``, ``caption``) or
    ``captionlab.retrieval``, which put them on the model's device; a cell that stacks ``transform``
    outputs itself leaves them on the CPU while ``load_checkpoint`` put the model on CUDA (04 and 07 did)."""
    from captionlab.notebooks import NOTEBOOKS

    assert sorted(p.name for p in (ROOT / "code").glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "code" / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert ".transform(" not in cell.source and "torch.tensor(" not in cell.source, (name, cell.source)
