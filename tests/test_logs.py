"""Logs for people and machines: the run on every line, and secrets never shown."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import httpx
from pydantic import SecretStr
from typer.testing import CliRunner

from connector_core.cli import app
from connector_core.connector import ConnectorConfig
from connector_core.logs import configure_logging, redact, register_secrets_of, run_context
from connector_core.sample import mobile_log


class _Settings(ConnectorConfig):
    url: str
    api_key: SecretStr


def test_secrets_are_masked_wherever_they_appear() -> None:
    register_secrets_of(_Settings(url="http://x", api_key=SecretStr("tok-9f8e7d6c5b")))
    stream = io.StringIO()
    configure_logging(logging.INFO, "json", stream=stream)
    logging.getLogger("dcsync.test").warning("remote said: bad key tok-9f8e7d6c5b for /i/abc")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert "tok-9f8e7d6c5b" not in stream.getvalue()
    assert line["message"] == "remote said: bad key *** for /i/abc"
    assert redact("x tok-9f8e7d6c5b y") == "x *** y"


def test_json_lines_carry_the_run_and_connector() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, "json", stream=stream)
    with run_context(run_id=42, connector="registry"):
        logging.getLogger("dcsync.push").info("pushed through event cursor %s", 17)
    logging.getLogger("dcsync.push").info("outside any run")
    inside, outside = (json.loads(x) for x in stream.getvalue().splitlines()[-2:])
    assert (inside["run_id"], inside["connector"], inside["level"]) == (42, "registry", "info")
    assert inside["message"] == "pushed through event cursor 17"
    assert "run_id" not in outside


def test_a_verbose_json_run_logs_its_run_id_on_every_line(tmp_path: Path, mock_server: httpx.Client) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text(
        f"connectors:\n  reg:\n    type: mock\n    settings:\n      url: {mock_server.base_url}\n"
    )
    runner = CliRunner()
    out = tmp_path / "events.jsonl"
    out.write_text("".join(e.to_json_line() + "\n" for e in mobile_log(2, 1, 0)))
    assert runner.invoke(app, ["log", "import", str(out), "-c", str(config)]).exit_code == 0
    result = runner.invoke(app, ["-v", "--log-format", "json", "run", "reg", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    run_lines = [
        x for x in lines if x["logger"].startswith("dcsync.push") or x["logger"].startswith("dcsync.pull")
    ]
    assert run_lines and all(x.get("run_id") == 1 and x.get("connector") == "reg" for x in run_lines)
