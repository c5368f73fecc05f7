"""The evaluation report: report.html and per_image.json from `evaluate`, per-image scores that average
to the corpus figure, `captionlab report` for one folder or two, and the page in a real browser."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from captionlab.cli import main
from captionlab.errors import InputError
from captionlab.report import write_report
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAST = ["--metrics", "Bleu,ROUGE_L,CIDEr", "--tokenizer", "ptb-python", "--device", "cpu", "--no-progress"]


def page_data(page: Path) -> dict:
    """The rows a report page carries (its inline JSON)."""
    return json.loads(page.read_text().split('id="data">')[1].split("</script>")[0].replace("<\\/", "</"))


def evaluate(run_dir: Path, out: Path, *extra: str) -> Path:
    assert main(["evaluate", str(run_dir / "best.pt"), "--out", str(out), *FAST, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def evaluations(trained_attention, trained, tmp_path_factory):
    """The tiny Show-Attend-Tell (A) and CNN+GRU (B) evaluated on the same test split."""
    root = tmp_path_factory.mktemp("evaluations")
    return evaluate(trained_attention[1].run_dir, root / "sat"), evaluate(trained[1].run_dir, root / "gru")


def test_evaluate_writes_a_report_whose_per_image_cider_averages_to_the_corpus_cider(evaluations):
    sat, _ = evaluations
    metrics = json.loads((sat / "metrics.json").read_text())
    rows = json.loads((sat / "per_image.json").read_text())["images"]
    assert len(rows) == metrics["images"] and (sat / "report.html").stat().st_size > 10_000
    mean = sum(r["scores"]["CIDEr"] for r in rows) / len(rows)
    assert mean == pytest.approx(metrics["metrics"]["CIDEr"], abs=1e-9)
    row = rows[0]
    assert len(row["attention"]) == len(row["caption"].split()) and len(row["attention"][0]) == row["grid"] ** 2
    assert sum(row["attention"][0]) == pytest.approx(1.0, abs=1e-3)  # a distribution over the regions
    assert set(row["wrong"]) == {"words", "count"} and metrics["run"]["model"] == "show_attend_tell"


def test_no_report_writes_neither_page_nor_per_image_scores(trained, tmp_path):
    out = evaluate(trained[1].run_dir, tmp_path / "eval", "--no-report")
    assert (out / "metrics.json").is_file() and not (out / "report.html").exists()
    assert not (out / "per_image.json").exists()


def test_report_compares_two_evaluations_of_one_split_and_refuses_two_splits(evaluations, trained, tmp_path, capsys):
    sat, gru = evaluations
    assert main(["report", str(sat), str(gru), "--out", str(tmp_path / "compare.html")]) == 0
    assert f"report: {tmp_path / 'compare.html'}" in capsys.readouterr().out
    data = page_data(tmp_path / "compare.html")
    a = {r["image_id"]: r for r in json.loads((sat / "per_image.json").read_text())["images"]}
    b = {r["image_id"]: r for r in json.loads((gru / "per_image.json").read_text())["images"]}
    assert data["compare"] and len(data["rows"]) == len(a)
    for row in data["rows"]:
        assert row["caption"] == a[row["id"]]["caption"] and row["b_caption"] == b[row["id"]]["caption"]
        assert row["diff"] == pytest.approx(b[row["id"]]["scores"]["CIDEr"] - a[row["id"]]["scores"]["CIDEr"])
    val = evaluate(trained[1].run_dir, tmp_path / "val", "--split", "val")
    with pytest.raises(InputError, match="not evaluations of the same split"):
        write_report(sat, val)
    assert main(["report", str(tmp_path)]) == 2  # not an evaluation folder: one line
    assert "is not an evaluation folder" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `sudo apt-get install chromium`")
def test_the_report_pages_work_in_headless_chromium(evaluations, tmp_path):
    from playwright.sync_api import sync_playwright

    sat, gru = evaluations
    compare = write_report(sat, gru, tmp_path / "compare.html")
    rows = json.loads((sat / "per_image.json").read_text())["images"]
    artifacts = Path(os.environ.get("CAPTIONLAB_TEST_ARTIFACTS", ROOT / "output" / "test_artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((sat / "report.html").as_uri())
        assert page.text_content("#count") == f"{len(rows)} of {len(rows)} images"
        assert page.locator("#body tr").count() == min(50, len(rows))
        first = page.get_attribute("#body tr", "data-id")
        worst = min(rows, key=lambda r: r["scores"]["CIDEr"])["scores"]["CIDEr"]
        assert next(r for r in rows if str(r["image_id"]) == first)["scores"]["CIDEr"] == worst  # worst first
        page.click("th[data-key='CIDEr']")  # again: best first
        best = next(r for r in rows if str(r["image_id"]) == page.get_attribute("#body tr", "data-id"))
        assert best["scores"]["CIDEr"] == max(r["scores"]["CIDEr"] for r in rows)
        page.fill("#search", "circle")
        hits = [r for r in rows if any("circle" in t.lower() for t in [r["caption"], *r["references"]])]
        assert page.text_content("#count") == f"{len(hits)} of {len(rows)} images"
        page.fill("#search", "")
        page.locator("#body tr").first.locator(".w.att").nth(1).click()  # where it looked for the second word
        assert page.locator("#body tr").first.locator(".w.on").count() == 1
        shaded = page.evaluate("document.querySelector('#body tr canvas').getContext('2d').getImageData(0,0,112,112)"
                               ".data.filter((v, i) => i % 4 == 3 && v > 0).length")  # fmt: skip
        assert shaded > 0
        page.evaluate("document.querySelector('table.metrics').scrollIntoView()")
        page.screenshot(path=str(artifacts / "report.png"))
        page.goto(compare.as_uri())
        row = page.locator("#body tr").first
        paired = page_data(compare)["rows"]
        top = next(r for r in paired if str(r["id"]) == row.get_attribute("data-id"))
        assert top["diff"] == max(r["diff"] for r in paired)  # where B won most comes first
        assert top["caption"] in " ".join(row.text_content().split()) and top["b_caption"] in row.text_content()
        assert "B - A" in page.text_content("table.metrics")
        page.evaluate("document.querySelector('table.metrics').scrollIntoView()")
        page.screenshot(path=str(artifacts / "report_compare.png"))
        browser.close()
    assert not errors, errors


def test_caption_report_shows_a_folder_of_images_with_captions_and_heat_maps(trained_attention, tmp_path, capsys):
    from captionlab.data import load_dataset

    cfg, result = trained_attention
    folder = tmp_path / "photos"
    folder.mkdir()
    for r in load_dataset(cfg.data).split("test")[:3]:
        shutil.copy(r.path, folder / r.path.name)
    out = tmp_path / "mine.html"
    assert main(["caption", str(result.run_dir / "best.pt"), str(folder), "--report", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert f"report: {out}" in printed.err
    data = page_data(out)
    captions = dict(line.split("\t") for line in printed.out.strip().splitlines())
    assert [r["caption"] for r in data["rows"]] == list(captions.values()) and len(data["rows"]) == 3
    for row in data["rows"]:
        assert row["thumb"].startswith("data:image/jpeg;base64,") and row["attention"] and not row["refs"]


def test_markup_in_captions_names_and_words_never_reaches_the_page_unescaped(tmp_path):
    """A VLM's caption, an original caption, a file name and a frequent word that hold markup: the page
    shows them as text (the autoescaped template), and the rows' JSON cannot close its <script>."""
    from captionlab.report import write_rebuild_page

    bad = "<img src=x onerror=alert(1)>"
    stats = {f"rebuilt {bad}": {"captions": 1, "mean_length": 3.0, "max_length": 3, "vocabulary": 3,
                                "top_words": [(bad, 1)]}}  # fmt: skip
    page = write_rebuild_page([(7, tmp_path / f"{bad}.jpg", bad, [f"</script>{bad}"])], stats, tmp_path / "p.html")
    text = page.read_text()
    outside = text.split('id="data">')[0] + text.split("</script>", 1)[1]
    assert "<img" not in outside and "&lt;img src=x onerror=alert(1)&gt;" in outside
    assert text.count("</script>") == 2  # the data's and the code's: the caption's "</script>" stayed inside
    row = page_data(page)["rows"][0]
    assert row["caption"] == bad and row["refs"] == [f"</script>{bad}"]
