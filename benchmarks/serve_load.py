"""Load test of ``captionlab serve`` on loopback: N concurrent clients send images; throughput and latency
with dynamic batching vs ``--max-batch 1``, and every answer checked against the offline caption of its
image. Bounded: a fixed number of requests per mode and a time limit.

    python benchmarks/serve_load.py [--checkpoint output/model_ckpt/demo_cnn_gru/best.pt] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(checkpoint: Path, port: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "captionlab.cli", "serve", str(checkpoint), "--port", str(port), "--device", "cpu"]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-queue", "1024"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "code")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


def multipart(image: bytes) -> tuple[bytes, bytes]:
    """(content type, body) of a one-file multipart form, built once per image."""
    boundary = b"captionlabload"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="img.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--" + boundary + b"--\r\n"
    )
    return b"multipart/form-data; boundary=" + boundary, body


class Connection:
    """A keep-alive HTTP/1.1 client on a raw socket: a load generator should cost the machine (which it
    shares with the server here) as little CPU as it can, as wrk would; httpx costs several times more."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, content_type: bytes, body: bytes) -> tuple[int, dict]:
        head = b"POST /caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type
        head += b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), json.loads(payload)

    def close(self) -> None:
        self.writer.close()


async def load(port: int, images: list[bytes], expected: list[str], clients: int, total: int, limit_s: float) -> dict:
    forms = [multipart(im) for im in images]
    sent = 0
    latencies: list[float] = []
    batches: list[int] = []
    decode_ms: list[float] = []
    wrong = 0

    async def client() -> None:
        nonlocal sent, wrong
        conn = Connection(port)
        await conn.open()
        while sent < total:
            i = sent % len(images)
            sent += 1
            t = time.perf_counter()
            status, body = await conn.post(*forms[i])
            latencies.append(time.perf_counter() - t)
            if status != 200 or body["caption"] != expected[i]:
                wrong += 1
            else:
                batches.append(body["timings"]["batch"])
                decode_ms.append(body["timings"]["decode_ms"])
        conn.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), limit_s)
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20)
    return {
        "answered": len(latencies),
        "wrong": wrong,
        "images/s": len(latencies) / elapsed,
        "p50 ms": statistics.median(latencies) * 1000,
        "p95 ms": q[18] * 1000,
        "mean batch": statistics.mean(batches) if batches else 0.0,
        "decode ms": statistics.mean(decode_ms) if decode_ms else 0.0,  # per batch, as a request saw it
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="output/model_ckpt/demo_cnn_gru/best.pt")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=512, help="per mode")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per mode")
    a = ap.parse_args()
    ckpt = (ROOT / a.checkpoint) if not Path(a.checkpoint).is_absolute() else Path(a.checkpoint)
    if not ckpt.is_file():
        sys.exit(f"{ckpt} not found: run `make demo` first, or pass --checkpoint")
    import torch

    from captionlab import load_checkpoint
    from captionlab.data import load_dataset

    captioner = load_checkpoint(ckpt, "cpu")
    records = load_dataset(captioner.config.data).split("test")[:64]
    images = [r.path.read_bytes() for r in records]
    expected = captioner.caption([r.path for r in records])  # the offline `caption` command's answers
    del captioner
    torch.set_num_threads(1)
    rows = {}
    for name, max_batch in ((f"dynamic batching (--max-batch {a.max_batch})", a.max_batch), ("--max-batch 1", 1)):
        port = free_port()
        server = start(ckpt, port, max_batch, a.max_wait_ms)
        try:
            rows[name] = asyncio.run(load(port, images, expected, a.clients, a.requests, a.time_limit))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
        print(name, {k: round(v, 1) for k, v in rows[name].items()}, flush=True)
    print(f"\n{a.clients} concurrent clients, {a.requests} requests per mode, {ckpt.parent.name}, CPU")
    print("| server | answered | wrong | images/s | p50 ms | p95 ms | mean batch | decode ms per batch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['answered']} | {r['wrong']} | {r['images/s']:.1f} | {r['p50 ms']:.0f} | "
            f"{r['p95 ms']:.0f} | {r['mean batch']:.1f} | {r['decode ms']:.0f} |"
        )
    dyn, one = rows.values()
    print(f"\nthroughput x{dyn['images/s'] / one['images/s']:.1f} with dynamic batching")


if __name__ == "__main__":
    main()
