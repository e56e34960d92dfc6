"""The ``dcsync`` command with an OpenFn connector, run as a separate process the way an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openfn_support import write_project

from connector_core.project import Project
from connector_core.sample import mobile_log
from connector_core.state.base import Direction
from connector_core.testing.server import free_port
from connectors.openfn.fake import FakeLightning
from connectors.openfn.fake.seed import API_KEY, PAT, RESULTS_COLLECTION, TRIGGER_ID


def dcsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "connector_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_wrong_api_key_is_one_line_naming_the_trigger_without_the_key(
    tmp_path: Path, url: str, lightning: FakeLightning
) -> None:
    secret = "wrong-key-7f3a9c"
    config = write_project(
        tmp_path, url, instance={"pull": False}, api_key=secret, collection=None, token=None
    )
    project = Project.open(config)
    project.eventlog.append(mobile_log(households=2, members=1, updates=0))
    project.close()

    result = dcsync("run", "fn", "-c", str(config), cwd=tmp_path)

    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"/i/{TRIGGER_ID}" in message
    assert "credentials" in message and "refused" in message
    assert secret not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert lightning.work_orders == {}, "nothing was sent"
    runs = Project.open(config)
    try:
        assert runs.state.dead_letters("fn") == [], "a refused trigger dead-letters nothing"
        assert runs.state.get_checkpoint("fn", Direction.PUSH) is None
    finally:
        runs.close()


def test_mock_server_serves_the_fake_lightning_standalone(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "connector_core.cli", "mock-server", "openfn", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                probe = httpx.get(f"{base}/i/{TRIGGER_ID}", headers={"x-api-key": API_KEY}, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the fake did not start"
                time.sleep(0.1)
        assert probe.status_code == 200
        posted = httpx.post(f"{base}/i/{TRIGGER_ID}", json={"batch_id": "b"}, headers={"x-api-key": API_KEY})
        assert posted.status_code == 200 and posted.json()["work_order_id"]
        listed = httpx.get(
            f"{base}/collections/{RESULTS_COLLECTION}", headers={"authorization": f"Bearer {PAT}"}
        )
        assert listed.status_code == 200 and listed.json()["items"] == []
    finally:
        process.terminate()
        process.wait(timeout=10)
