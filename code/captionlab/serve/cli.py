"""The ``serve`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def cmd_serve(a: argparse.Namespace) -> None:
    import uvicorn

    from .app import ServeOptions, load_app

    if a.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"captionlab serve: listening on {a.host}: reachable from other machines", file=sys.stderr)
    options = ServeOptions(a.max_batch, a.max_wait_ms, a.max_queue, a.max_image_mb)
    app = load_app(a.checkpoint, a.device, options)
    print(f"captionlab serve: http://{a.host}:{a.port}/ (API docs: /docs; Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, timeout_graceful_shutdown=5)


def add_commands(command: Callable[[str, str], argparse.ArgumentParser], positive_int: Callable) -> None:
    s = command(
        "serve",
        "a caption web page and JSON API (POST /caption, GET /health, GET /info, docs at /docs) over a "
        "checkpoint; concurrent requests are decoded together (dynamic batching)",
    )
    s.add_argument("checkpoint", nargs="+", metavar="CHECKPOINT", help="best.pt / last.pt; several: an ensemble")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000, help="TCP port")
    s.add_argument("--max-batch", type=positive_int, default=32, help="most requests decoded as one batch")
    s.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="how long the first request of a batch waits for company"
    )
    s.add_argument("--max-queue", type=positive_int, default=256, help="waiting requests beyond this get 503")
    s.add_argument("--max-image-mb", type=float, default=20.0, help="largest upload accepted")
    s.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    s.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (info: one line per request)",
    )
    s.set_defaults(func=cmd_serve)
