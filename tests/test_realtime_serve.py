"""``dcsync serve`` against the real mock system: log watchers (SQLite, PostgreSQL), webhooks, SIGTERM.

Nothing here asserts by sleeping: each test waits for a condition (records at the fake, the trigger idle,
a run in the history) with a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from connector_core.events import FormSubmission
from connector_core.logs import MASK, redact
from connector_core.project import Project
from connector_core.realtime.hooks import SIGNATURE_HEADER, sign
from connector_core.realtime.serve import RealtimeService
from connector_core.sample import mobile_log
from connector_core.sync.runner import run_connector
from connector_core.testing.server import free_port

SECRET = "hook-secret-0123456789abcdef"
TOKEN = "hook-token-0123456789abcdef"


def _config(
    tmp_path: Path, url: str, *, eventlog: str = "", connector: str = "", realtime: bool = True
) -> Path:
    path = tmp_path / "dcsync.yaml"
    path.write_text(
        eventlog + "connectors:\n"
        "  reg:\n"
        "    type: mock\n"
        "    batch_size: 50\n"
        "    page_size: 200\n"
        f"    realtime: {str(realtime).lower()}\n"
        "    retry: {max_attempts: 3, initial_delay: 0.01, max_delay: 0.05, max_elapsed: 5}\n"
        f"{connector}"
        "    settings:\n"
        f"      url: {url}\n"
    )
    return path


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def running() -> Iterator[Callable[[Path], RealtimeService]]:
    started: list[RealtimeService] = []

    def start(config: Path) -> RealtimeService:
        service = RealtimeService(config, port=0).start()
        started.append(service)
        # each trigger runs once at start (what was appended while nobody watched): let that pass first
        for trigger in service.push_triggers.values():
            _wait(lambda t=trigger: t.runs >= 1 and t.idle, 30, "the start-up run")
        return service

    yield start
    for service in started:
        service.shutdown()


def _events(count: int, seed: int = 1) -> list[FormSubmission]:
    events = list(mobile_log(households=count // 4, members=3, updates=0, seed=seed))
    assert len(events) == count
    return events


def _delivered_once(mock_server: httpx.Client, project: Project) -> int:
    records = mock_server.get("/_control/records").json()
    entities = sum(1 for _ in project.eventlog.iter_entities())
    assert len(records) == entities
    assert [g for g, n in Counter(r["entityGuid"] for r in records).items() if n > 1] == []
    assert mock_server.get("/_control/stats").json()["duplicate_creates"] == {}
    return len(records)


def _burst(config: Path, mock_server: httpx.Client, running: Callable[[Path], RealtimeService]) -> None:
    service = running(config)
    trigger = service.push_triggers["reg"]
    events = _events(1000)
    project = Project.open(config)
    try:
        began = time.monotonic()
        for event in events:  # a burst: one append (one commit, one notification) per event
            project.eventlog.append([event])
        appended = time.monotonic() - began
        _wait(lambda: len(mock_server.get("/_control/records").json()) == 1000, 60, "1000 records")
        assert trigger.wait_idle(30)
        assert _delivered_once(mock_server, project) == 1000
        runs = project.state.runs("reg", limit=10_000)
        assert {r.trigger for r in runs} == {"realtime"} and all(r.outcome == "ok" for r in runs)
        # a run at most every max_delay while the burst lasts, then one to finish: not one per event
        assert len(runs) <= 3 + appended / service.settings.max_delay, (len(runs), appended)
        assert len(runs) < 100
        # the levels an operator watches follow real-time runs too, not only scheduled ones
        scraped = httpx.get(f"{service.url}/metrics", timeout=10).text
        assert 'dcsync_push_lag_events{connector="reg"} 0.0' in scraped
        assert 'dcsync_dead_letters_open{connector="reg"} 0.0' in scraped
    finally:
        project.close()


def test_a_burst_of_1000_events_on_a_sqlite_log_is_a_few_runs_delivering_each_record_once(
    tmp_path: Path, mock_server: httpx.Client, running: Callable[[Path], RealtimeService]
) -> None:
    _burst(_config(tmp_path, str(mock_server.base_url)), mock_server, running)


def test_a_burst_of_1000_events_on_a_postgresql_log_is_heard_through_listen_notify(
    tmp_path: Path,
    mock_server: httpx.Client,
    running: Callable[[Path], RealtimeService],
    postgres_url: str,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PG_URL", postgres_url)
    eventlog = f"eventlog:\n  backend: postgres\n  url: ${{PG_URL}}\n  schema: {pg_schema}\n"
    _burst(_config(tmp_path, str(mock_server.base_url), eventlog=eventlog), mock_server, running)


def test_the_postgresql_append_notifies_at_commit_with_its_schema(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    from connector_core.eventlog.postgres import NOTIFY_CHANNEL, PostgresEventLog

    log = PostgresEventLog(postgres_url, schema=pg_schema)
    listener = psycopg.connect(postgres_url, autocommit=True)
    try:
        listener.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
        events = _events(8)
        log.append(events)
        heard = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
        assert heard == [pg_schema]
        log.append(events)  # nothing new: nothing to say
        assert [n.payload for n in listener.notifies(timeout=0.3)] == []
    finally:
        listener.close()
        log.close()


def test_a_change_during_a_run_leads_to_exactly_one_follow_up_run(
    tmp_path: Path, mock_server: httpx.Client, running: Callable[[Path], RealtimeService]
) -> None:
    config = _config(tmp_path, str(mock_server.base_url))
    mock_server.put("/_control/faults", json={"latency": 0.5})  # every push request is slow
    service = running(config)
    events = _events(40)
    project = Project.open(config)
    try:
        project.eventlog.append(events[:20])
        _wait(lambda: any(r.outcome == "running" for r in project.state.runs("reg")), 10, "a run")
        for event in events[20:]:  # twenty changes while the run is on the wire
            project.eventlog.append([event])
        _wait(lambda: len(mock_server.get("/_control/records").json()) == 40, 30, "40 records")
        assert service.push_triggers["reg"].wait_idle(30)
        runs = project.state.runs("reg")
        assert len(runs) == 1 + 2 and all(r.outcome == "ok" for r in runs), "start-up, first, follow-up"
        assert _delivered_once(mock_server, project) == 40
    finally:
        project.close()


def test_a_lease_held_elsewhere_is_waited_for_and_the_changes_coalesced(
    tmp_path: Path, mock_server: httpx.Client, running: Callable[[Path], RealtimeService]
) -> None:
    config = _config(tmp_path, str(mock_server.base_url))
    service = running(config)
    trigger = service.push_triggers["reg"]
    holder = Project.open(config)
    project = Project.open(config)
    try:
        with holder.state.lease("reg"):  # as another process's run would
            for event in _events(20):
                project.eventlog.append([event])
            _wait(lambda: trigger.runs >= 2, 10, "the trigger to find the lease busy twice")
            assert mock_server.get("/_control/records").json() == []
            assert not trigger.idle, "the change is still pending"
        _wait(lambda: len(mock_server.get("/_control/records").json()) == 20, 30, "20 records")
        assert trigger.wait_idle(30)
        assert len(project.state.runs("reg")) == 1 + 1, "the start-up run and one more"
        assert _delivered_once(mock_server, project) == 20
    finally:
        project.close()
        holder.close()


def test_a_datacollect_tenant_is_polled_and_its_new_events_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: Callable[[Path], RealtimeService]
) -> None:
    from contracts.scenarios import event, ts

    from connector_core.testing.fake_datacollect import FakeDataCollect
    from connector_core.testing.fake_datacollect import create_app as create_datacollect
    from connector_core.testing.server import serve
    from connectors.mock.server import create_app as create_mock

    def person(n: int) -> dict[str, object]:
        data = {"entityName": "individual", "name": f"Person {n}", "national_id": f"ID-{n:05d}"}
        return event("create-individual", f"person-{n}", data, guid=f"ev-person-{n}", at=ts(n)).to_json()

    fake = FakeDataCollect(email="sync@example.org", password="correct horse", tenants=("demo",))
    assert fake.store("demo", [person(i) for i in range(3)]) == []
    monkeypatch.setenv("DC_PASSWORD", "correct horse")
    with serve(create_datacollect(fake)) as server, serve(create_mock()) as mock:
        eventlog = (
            f"eventlog:\n  backend: datacollect\n  url: {server.url}\n  config_id: demo\n"
            "  email: sync@example.org\n  password: ${DC_PASSWORD}\n"
            "serve:\n  remote_poll: 0.1\n  idle_poll_max: 0.4\n"
        )
        config = _config(tmp_path, mock.url, eventlog=eventlog)
        service = running(config)

        def records() -> list[dict[str, object]]:
            return httpx.get(f"{mock.url}/_control/records").json()  # type: ignore[no-any-return]

        _wait(lambda: len(records()) == 3, 10, "the tenant's first three people at the remote")
        assert fake.store("demo", [person(i) for i in range(3, 6)]) == []  # a phone syncs three more
        _wait(lambda: len(records()) == 6, 10, "the next three, without a schedule")
        assert service.push_triggers["reg"].wait_idle(10)
        assert sorted(Counter(r["entityGuid"] for r in records()).values()) == [1] * 6


def test_a_failing_remote_backs_off_and_the_pending_changes_stay_one_run(
    tmp_path: Path, mock_server: httpx.Client, running: Callable[[Path], RealtimeService]
) -> None:
    config = _config(tmp_path, str(mock_server.base_url))
    service = running(config)
    trigger = service.push_triggers["reg"]
    failing = [{"kind": "status", "status": 503}] * 3  # one run's three attempts
    mock_server.put("/_control/faults", json={"script": failing})
    project = Project.open(config)
    try:
        for event in _events(100):  # arrive while the remote fails and while the trigger backs off
            project.eventlog.append([event])
        _wait(lambda: len(mock_server.get("/_control/records").json()) == 100, 30, "100 records")
        assert trigger.wait_idle(30)
        outcomes = Counter(r.outcome for r in project.state.runs("reg", limit=1000))
        assert outcomes["failed"] == 1 and trigger.failures == 0
        assert outcomes["ok"] <= 1 + 3, outcomes  # the start-up run, then few: the failure held the rest back
        assert _delivered_once(mock_server, project) == 100
    finally:
        project.close()


def _hook_config(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, *, burst: int = 20) -> Path:
    monkeypatch.setenv("REG_HOOK_SECRET", SECRET)
    monkeypatch.setenv("REG_HOOK_TOKEN", TOKEN)
    webhook = (
        "    webhook:\n"
        "      secret: ${REG_HOOK_SECRET}\n"
        "      token: ${REG_HOOK_TOKEN}\n"
        "      max_body: 1024\n"
        f"      burst: {burst}\n"
        "      rate: 0.01\n"
    )
    return _config(tmp_path, url, connector=webhook, realtime=False)


def test_a_signed_webhook_pulls_within_a_second_and_a_bad_one_runs_nothing(
    tmp_path: Path,
    mock_server: httpx.Client,
    running: Callable[[Path], RealtimeService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _hook_config(tmp_path, str(mock_server.base_url), monkeypatch)
    service = running(config)
    pull = service.pull_triggers["reg"]
    assert redact(f"x {SECRET} {TOKEN}") == f"x {MASK} {MASK}", "webhook secrets are registered"
    mock_server.post(
        "/_control/records", json={"entityName": "individual", "data": {"name": "Ana"}}
    ).raise_for_status()
    body = b'{"model": "res.partner", "ids": [7], "data": {"name": "forged"}}'
    project = Project.open(config)
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            bad = [
                client.post("/hooks/reg", content=body),
                client.post("/hooks/reg", content=body, headers={SIGNATURE_HEADER: sign("wrong" * 5, body)}),
                client.post("/hooks/reg", content=body, headers={SIGNATURE_HEADER: "sha256=00"}),
                client.post("/hooks/reg", content=body, headers={"Authorization": "Bearer nope"}),
            ]
            assert [r.status_code for r in bad] == [401] * 4
            assert pull.pokes == 0 and pull.runs == 0 and project.state.runs("reg") == []
            assert client.post("/hooks/other", content=body).status_code == 404

            sent = time.monotonic()
            good = client.post("/hooks/reg", content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)})
            assert good.status_code == 202, good.text
            _wait(lambda: project.eventlog.count() > 0, 1.0, "the pulled record in the log")
            assert time.monotonic() - sent < 1.0
            assert pull.wait_idle(10)
            (run,) = project.state.runs("reg")
            assert (run.trigger, run.direction, run.outcome) == ("webhook", "pull", "ok")
            # the body's "forged" data never reached the log: the pull read the remote itself
            assert [e.data.get("name") for e in project.eventlog.iter_events()] == ["Ana"]

            bearer = client.post("/hooks/reg", headers={"Authorization": f"Bearer {TOKEN}"})
            assert bearer.status_code == 202
            metrics = client.get("/metrics").text
            assert 'dcsync_webhook_requests_total{connector="reg",status="401"} 4.0' in metrics
            assert 'dcsync_webhook_requests_total{connector="reg",status="202"} 2.0' in metrics
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").json() == {"status": "ready"}
    finally:
        project.close()


def test_webhook_bodies_over_the_limit_get_413_and_an_exhausted_caller_429(
    tmp_path: Path,
    mock_server: httpx.Client,
    running: Callable[[Path], RealtimeService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _hook_config(tmp_path, str(mock_server.base_url), monkeypatch, burst=2)
    service = running(config)
    pull = service.pull_triggers["reg"]
    big = b"x" * 1025
    signed = {SIGNATURE_HEADER: sign(SECRET, big)}
    with httpx.Client(base_url=service.url, timeout=10) as client:
        assert client.post("/hooks/reg", content=big, headers=signed).status_code == 413
        chunked = client.post("/hooks/reg", content=iter([b"x" * 600, b"x" * 425]), headers=signed)
        assert chunked.status_code == 413  # no Content-Length: the streamed size is counted
        assert pull.pokes == 0
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert [client.post("/hooks/reg", headers=bearer).status_code for _ in range(2)] == [202, 202]
        limited = client.post("/hooks/reg", headers=bearer)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert pull.pokes == 2
        # strangers do not spend the caller's budget, and are told 401 whatever the bucket holds
        assert client.post("/hooks/reg", content=b"{}").status_code == 401


def test_readyz_names_a_store_that_cannot_be_reached(
    tmp_path: Path,
    mock_server: httpx.Client,
    running: Callable[[Path], RealtimeService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PG_URL", f"postgresql://nobody:pw-never-shown@127.0.0.1:{free_port()}/x")
    state = "state:\n  backend: postgres\n  url: ${PG_URL}\n"
    config = _config(tmp_path, str(mock_server.base_url), eventlog=state, realtime=False)
    service = RealtimeService(config, port=0)
    problems = service.ready()
    assert len(problems) == 1 and problems[0].startswith("state store: ")
    assert "pw-never-shown" not in problems[0]


@pytest.mark.slow
def test_sigterm_during_a_run_of_dcsync_serve_loses_nothing(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _config(tmp_path, str(mock_server.base_url))
    config.write_text(config.read_text().replace("batch_size: 50", "batch_size: 10"))
    mock_server.put("/_control/faults", json={"latency": 0.2})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    port = free_port()
    command = [sys.executable, "-m", "connector_core.cli", "--log-format", "json", "-v", "serve"]
    command += ["--port", str(port), "-c", str(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    project = Project.open(config)
    try:
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, "dcsync serve to listen")
        project.eventlog.append(_events(200))
        _wait(lambda: len(mock_server.get("/_control/records").json()) >= 20, 30, "a run under way")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(line.get("run_id") and line.get("trigger") == "realtime" for line in lines), stderr
        outcomes = Counter(r.outcome for r in project.state.runs("reg"))
        assert outcomes["interrupted"] == 1 and set(outcomes) <= {"ok", "interrupted"}, outcomes
        delivered = mock_server.get("/_control/records").json()
        assert 0 < len(delivered) < 200
        assert len(delivered) == len(list(project.state.iter_links("reg"))), "nothing in limbo"
        mock_server.put("/_control/faults", json={})
        assert run_connector(project, "reg", pull=False).ok
        assert _delivered_once(mock_server, project) == 200
    finally:
        project.close()
        if process.poll() is None:
            process.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_real_time_settings_are_checked_with_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from connector_core.cli import app

    config = _config(tmp_path, "http://127.0.0.1:9", connector="    push: false\n")
    result = CliRunner().invoke(app, ["serve", "--port", "0", "-c", str(config)])
    assert result.exit_code == 2
    assert f"{config}:6:15: connectors.reg.realtime: this connector does not push" in result.stderr
    monkeypatch.setenv("SHORT", "too-short")
    config = _config(tmp_path, "http://127.0.0.1:9", connector="    webhook: {secret: '${SHORT}'}\n")
    result = CliRunner().invoke(app, ["serve", "--port", "0", "-c", str(config)])
    assert result.exit_code == 2
    assert "connectors.reg.webhook: secret must be at least 16 characters" in result.stderr
    assert "too-short" not in result.stderr
    config = _config(tmp_path, "http://127.0.0.1:9", realtime=False)
    result = CliRunner().invoke(app, ["serve", "--port", "0", "-c", str(config)])
    assert result.exit_code == 2 and "nothing to serve" in result.stderr


def test_odoo_17_send_webhook_notification_with_a_query_token_starts_a_pull(
    tmp_path: Path,
    mock_server: httpx.Client,
    running: Callable[[Path], RealtimeService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Odoo 17's "Send Webhook Notification" action (ir_actions.py, _run_action_webhook) can set no header:
    # it POSTs json.dumps({_action, _id, _model, fields...}, sort_keys=True) with Content-Type only and
    # gives up after 1 s. So the only credential it can carry is in the URL.
    monkeypatch.setenv("ODOO_HOOK_TOKEN", "odoo-query-token-0123456789")
    webhook = "    webhook:\n      query_token: ${ODOO_HOOK_TOKEN}\n"
    config = _config(tmp_path, str(mock_server.base_url), connector=webhook, realtime=False)
    service = running(config)
    pull = service.pull_triggers["reg"]
    body = json.dumps({"_action": "Notify dcsync(#12)", "_id": 7, "_model": "res.partner"}, sort_keys=True)
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=service.url, timeout=1) as odoo:
        assert odoo.post("/hooks/reg?token=wrong", content=body, headers=headers).status_code == 401
        assert odoo.post("/hooks/reg", content=body, headers=headers).status_code == 401
        assert pull.pokes == 0
        answer = odoo.post("/hooks/reg?token=odoo-query-token-0123456789", content=body, headers=headers)
        assert answer.status_code == 202
    _wait(lambda: pull.runs >= 1 and pull.idle, 10, "the pull")
    project = Project.open(config)
    try:
        (run,) = project.state.runs("reg")
        assert (run.trigger, run.direction) == ("webhook", "pull")
    finally:
        project.close()


def test_a_lost_listener_connection_is_reported_reconnected_and_nothing_is_missed(
    tmp_path: Path,
    mock_server: httpx.Client,
    running: Callable[[Path], RealtimeService],
    postgres_url: str,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PG_URL", postgres_url)
    eventlog = f"eventlog:\n  backend: postgres\n  url: ${{PG_URL}}\n  schema: {pg_schema}\n"
    config = _config(tmp_path, str(mock_server.base_url), eventlog=eventlog)
    service = running(config)
    (watcher,) = service.watchers
    assert watcher.healthy and service.ready() == []
    project = Project.open(config)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'dcsync serve listener' AND pid <> pg_backend_pid() "
                "AND query ILIKE 'LISTEN%%'"
            ).fetchall()
            assert killed
        _wait(lambda: not watcher.healthy, 10, "the watcher to notice")
        assert any(p.startswith("postgres log watcher: ") for p in service.ready())
        # appended while the watcher is down or coming back: the notification may be lost, the catch-up
        # signal a reconnected watcher sends is not
        project.eventlog.append(_events(12))
        _wait(lambda: len(mock_server.get("/_control/records").json()) == 12, 30, "the catch-up push")
        assert watcher.healthy and service.ready() == []
        assert _delivered_once(mock_server, project) == 12
    finally:
        project.close()


def test_schedules_of_a_worker_fleet_project_are_left_to_the_fleet(
    tmp_path: Path, mock_server: httpx.Client
) -> None:
    config = _config(tmp_path, str(mock_server.base_url), connector="    schedule:\n      - {every: 1}\n")
    assert RealtimeService(config, port=0).scheduler.jobs != []
    config.write_text("scheduler: {engine: procrastinate}\n" + config.read_text())
    service = RealtimeService(config, port=0)
    assert service.scheduler.jobs == [] and set(service.push_triggers) == {"reg"}
