"""``captionlab serve`` (issue 13): the API over a tiny checkpoint, dynamic batching, every bad request
answered with its 4xx, a full queue with 503, and the web page driven in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis.specs.openapi.checks import positive_data_acceptance

from captionlab import load_checkpoint
from captionlab.data import load_dataset
from captionlab.data.images import BadImageError, ImageTooLargeError, decode_image
from captionlab.serve.app import ServeOptions, load_app
from conftest import ROOT


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(trained):
    cfg, result = trained
    ckpt = result.run_dir / "best.pt"
    return ckpt, [r.path for r in load_dataset(cfg.data).split("test")[:6]]


def call(app, requests: list[dict]) -> list[httpx.Response]:
    """Send requests concurrently to the app in this process (its own event loop, as under uvicorn)."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.request(**r) for r in requests))

    return asyncio.run(go())


def upload(data: bytes, **form) -> dict:
    return {"method": "POST", "url": "/caption", "files": {"file": ("x.png", data, "image/png")}, "data": form}


def test_api_round_trip_batches_concurrent_requests_and_matches_offline(served):
    ckpt, paths = served
    app = load_app([ckpt], "cpu", ServeOptions(max_batch=8, max_wait_ms=200))
    offline = load_checkpoint(ckpt, "cpu").caption(paths, beam_size=3)
    answers = call(app, [upload(p.read_bytes(), beam_size="3") for p in paths])
    assert [a.status_code for a in answers] == [200] * len(paths)
    bodies = [a.json() for a in answers]
    assert [b["caption"] for b in bodies] == offline  # each request gets its own image's caption
    assert max(b["timings"]["batch"] for b in bodies) > 1  # concurrent requests shared a batch
    assert all(b["logprob"] < 0 and b["model"] == "cnn_gru" and b["settings"]["beam_size"] == 3 for b in bodies)
    health, info, docs, page = call(
        app, [{"method": "GET", "url": u} for u in ("/health", "/info", "/openapi.json", "/")]
    )
    assert health.json()["status"] == "ok" and health.json()["batches"] >= 1
    assert info.json()["vocab_size"] > 10 and info.json()["attention"] is False and str(ckpt) in info.json()["metrics"]
    assert "/caption" in docs.json()["paths"] and 'id="drop"' in page.text
    sampled = call(app, [upload(paths[0].read_bytes(), sample="true", temperature="0.7", top_p="0.9")])[0].json()
    assert sampled["settings"]["sample"] and sampled["caption"]


def test_bad_requests_get_a_4xx_with_a_reason_and_the_server_keeps_going(served):
    ckpt, paths = served
    app = load_app([ckpt], "cpu", ServeOptions(max_image_mb=0.5, max_pixels=4_000_000))
    good = paths[0].read_bytes()
    big = Image.new("1", (2500, 2000))  # 5 M pixels of nothing: a few kB as PNG, 15 MB decoded as RGB
    cases = {
        "not an image": (upload(b"hello, I am text"), 400, "cannot read image"),
        "truncated": (upload(good[: len(good) // 2]), 400, "cannot read image"),
        "empty": (upload(b""), 400, "empty"),
        "body over the limit": (upload(os.urandom(600_000)), 413, "upload too large: over the 0.5 MB limit"),
        "image over the limit": (upload(os.urandom(540_000)), 413, "image over the 0.5 MB limit"),  # body within
        "decompression bomb": (upload(png(big)), 413, "over the limit of 4 M pixels"),
        "no file field": (
            {"method": "POST", "url": "/caption", "data": {"beam_size": "2"}},
            422,
            "file: Field required: send the image as the multipart form field 'file'",
        ),
        "beam out of range": (upload(good, beam_size="0"), 422, "beam_size: 0 is out of range"),
        "beam not a number": (upload(good, beam_size="many"), 422, "beam_size"),
        "temperature zero": (upload(good, sample="true", temperature="0"), 422, "temperature"),
        "top-p above one": (upload(good, sample="true", top_p="1.5"), 422, "top_p"),
    }
    answers = call(app, [r for r, _, _ in cases.values()] + [upload(good)])
    for (name, (_, status, words)), a in zip(cases.items(), answers):
        assert a.status_code == status, (name, a.text)
        detail = a.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, (name, detail)
    assert answers[-1].status_code == 200 and answers[-1].json()["caption"]  # and it still captions


def test_a_chunked_upload_over_the_limit_is_refused_while_it_is_read(served):
    """No Content-Length (chunked transfer): the server counts the bytes as they arrive and answers 413
    before the rest is sent, instead of parsing the whole body first."""
    ckpt, _ = served
    app = load_app([ckpt], "cpu", ServeOptions(max_image_mb=0.5))
    boundary, chunk, n_chunks = "captionlab", b"\0" * 65536, 64  # 4 MB offered
    sent = {"chunks": 0}

    async def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'.encode()
        for _ in range(n_chunks):
            sent["chunks"] += 1
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    answer = call(app, [{"method": "POST", "url": "/caption", "content": body(), "headers": headers}])[0]
    assert answer.status_code == 413 and "upload too large: over the 0.5 MB limit" in answer.json()["detail"]
    assert sent["chunks"] < 16  # stopped at about 0.6 MB, not after reading all 4 MB


def test_the_batcher_never_mixes_decoding_settings_in_one_batch():
    """Requests with different settings arriving together are decoded in separate batches (each batch
    sees one key), and each request gets its own item's answer."""
    from captionlab.serve.batcher import DynamicBatcher

    seen: list[tuple[str, list[int]]] = []

    def run(items, key):
        seen.append((key, list(items)))
        return [{"item": i, "key": key} for i in items]

    async def go():
        batcher = DynamicBatcher(run, max_batch=16, max_wait_ms=100)
        keys = ["beam3", "greedy", "sample"]
        try:
            return await asyncio.gather(*(batcher.submit(i, keys[i % 3]) for i in range(12)))
        finally:
            batcher.close()

    answers = asyncio.run(go())
    assert [(a["item"], a["key"]) for a in answers] == [(i, ["beam3", "greedy", "sample"][i % 3]) for i in range(12)]
    assert sorted(k for k, _ in seen) == ["beam3", "greedy", "sample"]  # arrived together: one batch per setting
    assert all(all(["beam3", "greedy", "sample"][i % 3] == k for i in items) for k, items in seen)


def test_both_pixel_limits_refuse_an_image_as_too_large(monkeypatch):
    big = png(Image.new("1", (2500, 2000)))  # 5 M pixels
    with pytest.raises(ImageTooLargeError, match="^refusing image up.png: 2500x2000 pixels is over the limit"):
        decode_image(big, "up.png", max_pixels=4_000_000)  # ours, before PIL's
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # PIL's own decompression-bomb limit
    with pytest.raises(ImageTooLargeError, match="^refusing image up.png: "):
        decode_image(big, "up.png", max_pixels=None)
    with pytest.raises(BadImageError) as bad:
        decode_image(b"hello", "up.png")
    assert not isinstance(bad.value, ImageTooLargeError)


def test_a_full_queue_answers_503_with_retry_after(served, monkeypatch):
    ckpt, paths = served
    app = load_app([ckpt], "cpu", ServeOptions(max_batch=1, max_wait_ms=0, max_queue=1))
    batcher = app.state.batcher
    release = threading.Event()
    run = batcher.run
    monkeypatch.setattr(batcher, "run", lambda items, key: release.wait(30) and run(items, key))
    data = paths[0].read_bytes()

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            first = asyncio.create_task(client.request(**upload(data)))  # taken, decoding (held)
            while batcher.queue is None or batcher.worker is None or batcher.batches == 0 and batcher.waiting == 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            second = asyncio.create_task(client.request(**upload(data)))  # waits in the queue
            while batcher.waiting < 1:
                await asyncio.sleep(0.01)
            third = await client.request(**upload(data))  # the queue is full
            release.set()
            return [await first, await second, third]

    first, second, third = asyncio.run(go())
    assert third.status_code == 503 and third.headers["retry-after"] == "1" and "busy" in third.json()["detail"]
    assert first.status_code == second.status_code == 200  # nothing dropped


def test_attention_models_return_the_heat_map_figure(trained_attention):
    cfg, result = trained_attention
    app = load_app([result.run_dir / "best.pt"], "cpu")
    image = next((Path(cfg.data.path) / "images").glob("*.png"))
    body = call(app, [upload(image.read_bytes(), attention="true", beam_size="1")])[0].json()
    assert Image.open(io.BytesIO(base64.b64decode(body["attention_png"]))).format == "PNG"
    assert body["settings"]["attention"] is True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


NO_CHROMIUM = "Debian's chromium is not installed: `sudo apt-get install chromium` (as .ci/run does) runs it"


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_page_captions_an_uploaded_image_in_headless_chromium(served):
    import uvicorn
    from playwright.sync_api import sync_playwright

    ckpt, paths = served
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(load_app([ckpt], "cpu"), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    artifacts = Path(os.environ.get("CAPTIONLAB_TEST_ARTIFACTS", ROOT / "output" / "test_artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    expected = load_checkpoint(ckpt, "cpu").caption([paths[0]], beam_size=3)[0]
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.startsWith('model:')")
            page.set_input_files("#file", str(paths[0]))
            page.click("#go")
            page.wait_for_function("!['', '…'].includes(document.getElementById('caption').textContent)")
            assert page.text_content("#caption") == expected and page.text_content("#error") == ""
            assert "log-probability" in page.text_content("#meta")
            page.screenshot(path=str(artifacts / "serve_page.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert (artifacts / "serve_page.png").stat().st_size > 5000


def test_the_serve_command_starts_answers_and_stops_on_ctrl_c(served):
    import signal
    import subprocess
    import sys

    ckpt, paths = served
    port = free_port()
    cmd = [sys.executable, "-m", "captionlab.cli", "serve", str(ckpt), "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "code")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.time() + 60, None
        while time.time() < deadline and health is None and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health == {"status": "ok", "waiting": 0, "batches": 0}, proc.stderr.read() if proc.poll() else ""
        r = httpx.post(f"http://127.0.0.1:{port}/caption", files={"file": ("a.png", paths[1].read_bytes())})
        assert r.json()["caption"] == load_checkpoint(ckpt, "cpu").caption([paths[1]])[0]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and f"http://127.0.0.1:{port}/" in out


def test_every_answer_of_the_api_is_one_its_openapi_schema_documents(served):
    """schemathesis (the OpenAPI fuzzer) with all its checks against the served app's own /openapi.json, in
    process over ASGI: status codes, bodies and headers are the documented ones, no 5xx, required fields
    required (all checks but positive_data_acceptance, see below). Bounded: 25 examples per operation,
    derandomized (the same cases every run)."""
    ckpt, _ = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", load_app([ckpt], "cpu", ServeOptions(max_image_mb=0.5)))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {"GET /health", "GET /info", "POST /caption"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def answers_as_documented(case):
            # every check but one: a schema can say "a file" but not "an image", so a schema-valid
            # upload of random bytes is rightly refused (the documented 400), which positive_data_acceptance
            # counts as a failure
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        answers_as_documented()
