"""The notebooks are meant to be run in JupyterLab: `.venv/bin/jupyter lab` (installed by prepare.sh)
starts on loopback, lists code/*.ipynb through its REST API, and runs notebook 01's first cell in the
kernel prepare.sh registers for the venv ("captionlab")."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, TINY

pytestmark = pytest.mark.slow
JUPYTER = Path(sys.executable).with_name("jupyter")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    if not JUPYTER.exists():
        pytest.fail(f"{JUPYTER} is missing: prepare.sh installs JupyterLab (requirements.txt)")
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, "CAPTIONLAB_CONFIG": str(TINY), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = [str(JUPYTER), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.port_retries=0"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []  # CI runs as root; Jupyter refuses it without this
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"token {token}"}, timeout=10)
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited: {proc.stdout.read()[-2000:]}")
            try:
                if client.get("/api/status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("jupyter lab did not answer within 90 s")
            time.sleep(0.5)
        yield client, base, token
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def execute(base: str, token: str, kernel: str, code: str) -> tuple[str, str]:
    """One execute_request over the kernel's websocket: (reply status, text the cell printed)."""
    from tornado.websocket import websocket_connect

    url = base.replace("http", "ws") + f"/api/kernels/{kernel}/channels?token={token}"
    ws = await websocket_connect(url)
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex}
    header["version"] = "5.3"
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                 "channel": "shell", "buffers": []}))  # fmt: skip
    printed, status = [], None
    while status is None:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "execute_reply":
            status = msg["content"]["status"]
    ws.close()
    return status, "".join(printed)


def test_jupyter_lab_lists_the_notebooks_and_runs_notebook_01_in_the_venv_kernel(lab):
    client, base, token = lab
    listed = {item["name"] for item in client.get("/api/contents/code").json()["content"]}
    assert {p.name for p in (ROOT / "code").glob("*.ipynb")} <= listed and "08_real_photos.ipynb" in listed
    specs = client.get("/api/kernelspecs").json()["kernelspecs"]
    assert "captionlab" in specs, f"prepare.sh registers the venv's kernel as 'captionlab'; found {sorted(specs)}"
    assert specs["captionlab"]["spec"]["argv"][0] == sys.executable
    kernel = client.post("/api/kernels", json={"name": "captionlab"}).json()["id"]
    nb = json.loads((ROOT / "code" / "01_cnn_gru.ipynb").read_text())
    first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    status, printed = asyncio.run(execute(base, token, kernel, first + "\nimport sys; print(sys.executable)"))
    assert status == "ok", printed
    assert "tiny/cnn_gru.yaml" in printed and sys.executable in printed
    client.delete(f"/api/kernels/{kernel}")
