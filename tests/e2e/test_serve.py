"""``custodia serve`` as ``make run`` starts it: a real server on a real port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CUSTODIA = str(Path(sys.executable).with_name("custodia"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_answers_health_and_ready_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIA_")}
    env["CUSTODIA_VAR_DIR"] = str(tmp_path)
    env["CUSTODIA_LOG_FORMAT"] = "json"
    for step in (["keys", "init", "--if-missing"], ["db", "upgrade"]):
        subprocess.run([CUSTODIA, *step], env=env, check=True, capture_output=True, timeout=60)  # noqa: S603
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(  # noqa: S603
            [CUSTODIA, "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"{base}/ready", headers={"X-Request-Id": "e2e-1"}, timeout=5)
        assert ready.status_code == 200
        assert ready.headers["x-request-id"] == "e2e-1"
        schema = httpx.get(f"{base}/schema/openapi.json", timeout=5).json()
        assert schema["openapi"].startswith("3.1")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    written = log.read_text()
    started = [json.loads(line) for line in written.splitlines() if '"app_started"' in line]
    # Startup's objects are frozen out of the cyclic collector's full collections.
    assert started and started[0]["frozen_objects"] > 10_000, written
    # uvicorn shuts down gracefully, then re-raises SIGTERM so supervisors see the signal.
    assert code in {0, -signal.SIGTERM}, written
    assert "Application shutdown complete." in written
    assert '"event":"worker_started"' in written  # development runs the workers in-process
    assert '"request_id":"e2e-1"' in written
    assert "Traceback" not in written
