"""The operator console through its ASGI app: login and CSRF on everything, dead letters grouped and acted
on, conflicts resolved field by field, the mapping explorer, the audit trail. (The same flows in a real
browser: tests/test_console_browser.py.)"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from console_support import PASSWORD, REFUSAL, USER, app_for, conflict, csrf_of, failing_remote, log_in
from starlette.testclient import TestClient
from sync_support import remote_records
from typer.testing import CliRunner

from connector_core.cli import app as cli
from connector_core.console.app import console_app, standalone_app
from connector_core.console.auth import Logins, Throttle, UnsafeBinding, check_binding
from connector_core.project import Project
from connector_core.redaction import register_secret

PAGES = ["/ui/", "/ui/runs", "/ui/runs/1", "/ui/dead-letters", "/ui/dead-letters/1", "/ui/conflicts",
         "/ui/conflicts/1", "/ui/mapping", "/ui/mapping/reg/p0", "/ui/audit",
         "/ui/jobs", "/ui/jobs/1"]  # fmt: skip
ACTIONS = ["/ui/dead-letters/confirm", "/ui/dead-letters/apply", "/ui/conflicts/1/resolve", "/ui/logout"]


@pytest.fixture
def client(project: Project) -> Iterator[TestClient]:
    with TestClient(app_for(project)) as c:
        yield c


def test_every_page_and_action_needs_a_login_and_healthz_does_not(client: TestClient) -> None:
    for page in PAGES:
        answer = client.get(page, follow_redirects=False)
        assert answer.status_code == 303, page
        assert answer.headers["location"].startswith("/ui/login?next="), page
    assert "log in" in client.get("/ui/runs").text  # followed: the login page
    for action in ACTIONS:
        assert client.post(action, data={"action": "replay"}).status_code == 401, action
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_login_is_checked_throttled_and_gives_a_strict_httponly_cookie(project: Project) -> None:
    with TestClient(app_for(project, throttle=Throttle(attempts=3, window=60))) as client:
        page = client.get("/ui/login")
        no_token = client.post("/ui/login", data={"name": USER, "password": PASSWORD})
        assert no_token.status_code == 403
        assert log_in(client, USER, "wrong").status_code == 401
        assert log_in(client, "bob", PASSWORD).status_code == 401
        assert log_in(client, USER, "wrong again").status_code == 401
        assert log_in(client, USER, PASSWORD).status_code == 429  # throttled, even with the right one
    with TestClient(app_for(project)) as client:
        done = log_in(client)
        assert done.status_code == 303 and done.headers["location"] == "/ui/"
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and PASSWORD not in cookie
        assert f'signed in as <b id="who">{USER}</b>' in client.get("/ui/").text
        assert page.status_code == 200
    (login,) = project.state.actions(action="login")
    assert login.actor == f"ui:{USER}"


def test_a_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    log_in(client)
    for action in ACTIONS:
        assert client.post(action, data={"action": "replay", "scope": "connector"}).status_code == 403
        bad = client.post(action, data={"action": "replay", "csrf_token": "forged"})
        assert bad.status_code == 403, action
    assert client.get("/ui/").status_code == 200  # still logged in: logout was refused too


def test_a_next_page_after_login_stays_inside_the_console(client: TestClient) -> None:
    page = client.get("/ui/login")
    done = client.post(
        "/ui/login",
        data={
            "name": USER,
            "password": PASSWORD,
            "next": "//evil.example/",
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
    assert done.headers["location"] == "/ui/"


def test_dead_letters_are_one_group_per_reason_and_discarded_after_a_confirmation(
    project: Project, mock_server: httpx.Client, client: TestClient
) -> None:
    refs = failing_remote(project, mock_server, count=4)
    log_in(client)
    overview = client.get("/ui/").text
    assert "degraded" in overview and "<svg" in overview
    grouped = client.get("/ui/dead-letters?connector=reg").text
    assert grouped.count('class="group"') == 1 and REFUSAL in grouped and '"num count">4<' in grouped
    listing = client.get(
        "/ui/dead-letters", params={"connector": "reg", "direction": "push", "reason": REFUSAL}
    ).text
    assert listing.count('class="letter"') == 4 and all(ref in listing for ref in refs)
    csrf = csrf_of(grouped)
    form = {"csrf_token": csrf, "action": "discard", "scope": "group", "connector": "reg",
            "direction": "push", "reason": REFUSAL}  # fmt: skip
    confirm = client.post("/ui/dead-letters/confirm", data=form)
    assert 'id="confirm-count">4<' in confirm.text
    assert project.state.open_counts("reg").dead_letters == 4  # nothing done before confirming
    assert client.post("/ui/dead-letters/apply", data=form).status_code == 400  # a discard needs a note
    done = client.post("/ui/dead-letters/apply", data={**form, "note": "duplicates of p9"})
    assert "discarded 4" in ended_job(client, str(done.url)).text
    assert project.state.open_counts("reg").dead_letters == 0
    (action,) = project.state.actions(action="discard")
    assert action.actor == f"ui:{USER}" and action.detail["note"] == "duplicates of p9"
    audit = client.get("/ui/audit").text
    assert f"ui:{USER}" in audit and "discard" in audit and "duplicates of p9" in audit


def test_one_letter_shows_its_payload_and_message_without_secrets(
    project: Project, mock_server: httpx.Client, client: TestClient
) -> None:
    secret = "s3cret-token-value-42"
    register_secret(secret)
    mock_server.put("/_control/faults", json={"reject": {"p1": f"refused, key {secret}"}})
    from sync_support import FAST_RETRY, event

    from connector_core.sync.runner import run_connector

    project.eventlog.append(
        [
            event(
                "a",
                "p1",
                "create-individual",
                {"entityName": "individual", "first_name": "Zoe", "note": secret},
            )
        ]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (letter,) = project.state.dead_letters("reg")
    log_in(client)
    page = client.get(f"/ui/dead-letters/{letter.id}").text
    assert "Zoe" in page and "refused, key" in page and secret not in page
    assert secret not in client.get("/ui/dead-letters?connector=reg").text
    assert client.get("/ui/dead-letters/999999").status_code == 404


def test_runs_are_filtered_and_paged_by_keyset(
    project: Project, mock_server: httpx.Client, client: TestClient
) -> None:
    failing_remote(project, mock_server)
    from connector_core.sync.runner import run_connector

    for _ in range(3):
        run_connector(project, "reg", pull=False)
    log_in(client)
    page = client.get("/ui/runs", params={"connector": "reg", "direction": "push"}).text
    assert page.count('href="/ui/runs/') == 4 and "degraded" in page
    assert "no runs" in client.get("/ui/runs", params={"outcome": "failed"}).text
    (first,) = project.state.run_page("reg", limit=1)
    assert f"Run {first.id}" in client.get(f"/ui/runs/{first.id}").text
    older = project.state.run_page("reg", before_id=first.id, limit=10)
    assert [r.id for r in older] == sorted((r.id for r in older), reverse=True) and len(older) == 3


def test_a_conflict_shows_three_versions_and_is_resolved_field_by_field(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    project = make_project("    conflict_policy: manual\n")
    conflict_id = conflict(project, mock_server)
    with TestClient(app_for(project)) as client:
        log_in(client)
        page = client.get(f"/ui/conflicts/{conflict_id}").text
        assert (
            page.count('class="field differs"') == 2 and "&#34;Anna&#34;" in page and "&#34;Ann&#34;" in page
        )
        fields = {"csrf_token": csrf_of(page), "field:first_name": "external", "field:phone_number": "local"}
        with project.state.lease("reg"):  # a run (or a console job's replay) holds the connector
            busy = client.post(f"/ui/conflicts/{conflict_id}/resolve", data=fields)
        assert busy.status_code == 409 and "already running" in busy.text
        assert project.state.get_conflict(conflict_id).status == "open"  # type: ignore[union-attr]
        done = client.post(f"/ui/conflicts/{conflict_id}/resolve", data=fields)
        assert "resolved (fields: first_name=external, phone_number=local)" in done.text
        again = client.post(
            f"/ui/conflicts/{conflict_id}/resolve", data={"csrf_token": csrf_of(page), "take": "local"}
        )
        assert again.status_code == 409 and "no open conflict" in again.text
    entity = project.eventlog.get_entity("c1")
    assert entity is not None and (entity.data["first_name"], entity.data["phone_number"]) == ("Ann", "+2")
    (action,) = project.state.actions(action="resolve")
    assert action.actor == f"ui:{USER}" and action.target == "c1"


def test_the_mapping_explorer_finds_by_name_and_shows_payload_and_diff(
    project: Project, mock_server: httpx.Client, client: TestClient
) -> None:
    failing_remote(project, mock_server, count=1)
    log_in(client)
    found = client.get("/ui/mapping", params={"connector": "reg", "q": "fine"}).text
    assert "/ui/mapping/reg/ok1" in found and "/ui/mapping/reg/p0" not in found
    assert "/ui/mapping/reg/p0" in client.get("/ui/mapping", params={"connector": "reg", "q": "p0"}).text
    assert "no entity matches" in client.get("/ui/mapping", params={"connector": "reg", "q": "50%_"}).text
    linked = client.get("/ui/mapping/reg/ok1").text
    assert "Linked to external id" in linked and 'id="payload"' in linked and "Fine" in linked
    unlinked = client.get("/ui/mapping/reg/p0").text
    assert "Not linked yet" in unlinked and 'class="added"' in unlinked
    assert client.get("/ui/mapping/nope/ok1").status_code == 404


def test_binding_beyond_loopback_without_a_login_is_refused_in_one_line(tmp_path: Path) -> None:
    check_binding("127.0.0.1", Logins())
    check_binding("0.0.0.0", Logins({"a": "b"}))
    with pytest.raises(UnsafeBinding, match="refusing to serve the console on 0.0.0.0 without a login"):
        check_binding("0.0.0.0", Logins())
    (tmp_path / "dcsync.yaml").write_text("connectors: {}\n")
    shown = CliRunner().invoke(cli, ["ui", "--host", "0.0.0.0", "-c", str(tmp_path / "dcsync.yaml")])
    assert shown.exit_code == 2 and "refusing to serve the console on 0.0.0.0" in shown.output
    assert "Traceback" not in shown.output and len(shown.output.strip().splitlines()) == 1


def test_a_password_variable_is_read_when_the_console_starts_not_by_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "dcsync.yaml"
    config.write_text("ui:\n  users:\n    ana: ${CONSOLE_PW_TEST}\nconnectors: {}\n")
    monkeypatch.delenv("CONSOLE_PW_TEST", raising=False)
    assert CliRunner().invoke(cli, ["status", "-c", str(config)]).exit_code == 0
    shown = CliRunner().invoke(cli, ["ui", "-c", str(config)])
    assert shown.exit_code == 2 and "dcsync.yaml:3" in shown.output and "CONSOLE_PW_TEST" in shown.output


def test_dcsync_serve_mounts_the_console_at_ui_behind_its_login(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector_core.realtime.serve import RealtimeService

    config = tmp_path / "dcsync.yaml"
    monkeypatch.setenv("DCSYNC_UI_TOKEN", "a-token-long-enough-1234")
    service = RealtimeService(config, port=0, ui=True).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/ui/runs").headers["location"] == "/ui/login?next=%2Fruns"
            page = client.get("/ui/login")
            done = client.post(
                "/ui/login",
                data={"name": "", "password": "a-token-long-enough-1234", "csrf_token": csrf_of(page.text)},
            )
            assert done.status_code == 303 and 'id="who">token<' in client.get("/ui/").text
    finally:
        service.shutdown()
    monkeypatch.delenv("DCSYNC_UI_TOKEN")
    with pytest.raises(UnsafeBinding):
        RealtimeService(config, host="0.0.0.0", port=0, ui=True).start()


def test_what_a_remote_or_a_record_says_is_shown_as_text_never_as_markup(
    project: Project, mock_server: httpx.Client, client: TestClient
) -> None:
    from sync_support import FAST_RETRY, event

    from connector_core.sync.runner import run_connector

    mock_server.put("/_control/faults", json={"reject": {"p1": "<script>alert('reason')</script>"}})
    project.eventlog.append(
        [event("a", "p1", "create-individual", {"entityName": "individual", "first_name": "<img src=x>"})]
    )
    run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    (letter,) = project.state.dead_letters("reg")
    log_in(client)
    for page in ("/ui/dead-letters", f"/ui/dead-letters/{letter.id}", "/ui/mapping/reg/p1", "/ui/"):
        html = client.get(page).text
        assert "<script>" not in html and "<img src=x>" not in html, page
    assert "&lt;script&gt;" in client.get("/ui/dead-letters").text


def test_each_pushing_run_records_the_lag_it_left_and_the_overview_charts_it(
    project: Project, mock_server: httpx.Client, client: TestClient
) -> None:
    from sync_support import FAST_RETRY, event

    from connector_core.sync.runner import run_connector

    for i in range(3):
        project.eventlog.append([event(f"e{i}", f"q{i}", "create-individual", {"entityName": "individual"})])
        run_connector(project, "reg", retry=FAST_RETRY)
    mock_server.put("/_control/faults", json={"script": [{"status": 503}] * 20})
    project.eventlog.append([event("e9", "q9", "create-individual", {"entityName": "individual"})])
    assert not run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    lags = [r.counts.get("push_lag") for r in reversed(project.state.runs("reg"))]
    assert lags == [0, 0, 0, 1]  # the failed push left its event behind
    log_in(client)
    overview = client.get("/ui/").text
    assert overview.count("<rect") >= 4 + 4  # a bar per run in each chart
    assert "<title>1</title>" in overview  # the last run's lag, as its bar's hover text


def test_dcsync_ui_serves_the_console_until_stopped(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from connector_core.testing.server import free_port

    (tmp_path / "dcsync.yaml").write_text("connectors: {}\n")
    port = free_port()
    env = {**os.environ, "DCSYNC_UI_TOKEN": "a-token-long-enough-1234"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector_core.cli",
            "ui",
            "--port",
            str(port),
            "-c",
            str(tmp_path / "dcsync.yaml"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert child.poll() is None and time.monotonic() < deadline, "dcsync ui did not start"
                time.sleep(0.1)
        home = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True)
        assert home.status_code == 200 and 'id="login-form"' in home.text
    finally:
        child.terminate()
        _, said = child.communicate(timeout=10)
    assert f"dcsync console on http://127.0.0.1:{port}/ui/" in said and "a-token-long-enough" not in said


def test_the_mapping_explorer_shows_the_payload_after_the_push_scope(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    from sync_support import event

    project = make_project("    scopes:\n      push:\n        individual: [first_name]\n")
    project.eventlog.append(
        [
            event(
                "a",
                "s1",
                "create-individual",
                {"entityName": "individual", "first_name": "Io", "phone_number": "+9"},
            )
        ]
    )
    with TestClient(app_for(project)) as client:
        log_in(client)
        page = client.get("/ui/mapping/reg/s1").text
    payload = page.split('id="payload">')[1].split("</pre>")[0]
    assert "Io" in payload and "+9" not in payload
    assert "phone_number" in page.split('id="out-of-scope">')[1].split("</p>")[0]


# -- replays and discards as background jobs -------------------------------------------------------------

JOB = re.compile(r"/ui/jobs/(\d+)$")


def job_of(html: str) -> dict[str, str]:
    """The job page's fields by id (``job-state``, ``job-done``, ...)."""
    return dict(re.findall(r'id="job-([a-z]+)"[^>]*>([^<]*)<', html))


def ended_job(client: TestClient, url: str, timeout: float = 60) -> httpx.Response:
    """The job's page once the job is no longer running."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(url)
        assert page.status_code == 200, page.text
        if job_of(page.text)["state"] != "running":
            return page
        assert time.monotonic() < deadline, f"job still running after {timeout}s: {job_of(page.text)}"
        time.sleep(0.05)


def slow_remote(mock_server: httpx.Client, still_refused: list[str], latency: float = 0.25) -> None:
    """The remote fixed for all but ``still_refused``, answering every request after ``latency`` s."""
    mock_server.put(
        "/_control/faults", json={"latency": latency, "reject": dict.fromkeys(still_refused, REFUSAL)}
    )


@pytest.fixture
def many(make_project: Callable[..., Project]) -> Project:
    """A project whose runs dead-letter any number of refusals in a row (no systemic stop)."""
    return make_project(extra="    systemic_after: 0\n")


@pytest.fixture
def many_client(many: Project) -> Iterator[TestClient]:
    with TestClient(app_for(many)) as c:
        yield c


def group_form(client: TestClient, action: str, **more: str) -> dict[str, str]:
    csrf = csrf_of(client.get("/ui/dead-letters").text)
    return {"csrf_token": csrf, "action": action, "scope": "group", "connector": "reg",
            "direction": "push", "reason": REFUSAL, **more}  # fmt: skip


def test_a_replay_runs_as_a_job_whose_page_shows_progress_while_other_pages_answer(
    many: Project, mock_server: httpx.Client, many_client: TestClient
) -> None:
    project, client = many, many_client
    refs = failing_remote(project, mock_server, count=91)  # 7 pages of 13 (page_size), 2 requests each
    still_refused = refs[:5]
    slow_remote(mock_server, still_refused)
    log_in(client)
    started = client.post("/ui/dead-letters/apply", data=group_form(client, "replay"), follow_redirects=False)
    assert started.status_code == 303
    job_url = started.headers["location"]
    assert JOB.search(job_url), job_url

    running = client.get(job_url).text
    assert job_of(running)["state"] == "running" and '<meta http-equiv="refresh"' in running
    assert job_of(running)["connector"] == "reg" and job_of(running)["actor"] == f"ui:{USER}"
    assert job_of(running)["total"] == "91"
    # the other pages answer between the job's pages, not once it has ended
    for page in ("/ui/", "/ui/dead-letters?connector=reg", "/ui/runs", "/ui/jobs"):
        asked = time.monotonic()
        answer = client.get(page)
        assert answer.status_code == 200 and time.monotonic() - asked < 2.0, page
    meanwhile = job_of(client.get(job_url).text)
    assert meanwhile["state"] == "running" and int(meanwhile["done"]) < 91
    listing = client.get("/ui/dead-letters").text
    assert 'class="note running-job"' in listing and job_url in listing  # reachable from the list

    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while (shown := job_of(client.get(job_url).text))["state"] == "running":
        seen.add(int(shown["done"]))
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len({n for n in seen if 0 < n < 91}) >= 2, f"no progress seen in between: {sorted(seen)}"

    ended = client.get(job_url).text
    final = job_of(ended)
    assert final["state"] == "finished" and "http-equiv" not in ended
    assert (final["done"], final["delivered"], final["failed"]) == ("91", "86", "5")
    assert "replayed 91: 86 delivered, 5 failed again" in ended
    # the remote and the state store show it, and the audit trail has the one action, as the CLI records it
    delivered = {r["entityGuid"] for r in remote_records(mock_server)}
    assert set(refs[5:]) <= delivered and not delivered & set(still_refused)
    assert {d.ref for d in project.state.dead_letters("reg")} == set(still_refused)
    (action,) = project.state.actions(action="replay")
    assert action.actor == f"ui:{USER}"
    assert action.detail == {"letters": 91, "delivered": 86, "failed_again": 5}
    jobs = client.get("/ui/jobs").text
    assert jobs.count('class="job"') == 1 and "finished" in jobs


def test_a_second_job_on_a_connector_with_one_running_is_refused(
    many: Project, mock_server: httpx.Client, many_client: TestClient
) -> None:
    project, client = many, many_client
    refs = failing_remote(project, mock_server, count=40)
    slow_remote(mock_server, refs[:3])
    log_in(client)
    started = client.post("/ui/dead-letters/apply", data=group_form(client, "replay"), follow_redirects=False)
    job_url = started.headers["location"]
    discard = group_form(client, "discard", note="<b>bold</b> move")
    second = client.post("/ui/dead-letters/apply", data=discard, follow_redirects=False)
    assert second.status_code == 409
    assert "a replay of reg is already running" in second.text and job_url in second.text
    first = ended_job(client, job_url)
    assert job_of(first.text)["state"] == "finished"
    assert [a.action for a in project.state.actions() if a.action in ("replay", "discard")] == ["replay"]
    assert project.state.open_counts("reg").dead_letters == 3  # the refused discard closed nothing

    # once the first has ended, the next one starts; the operator's note is text, never markup
    mock_server.put("/_control/faults", json={})
    again = client.post("/ui/dead-letters/apply", data=group_form(client, "discard", note="<b>bold</b> move"))
    page = ended_job(client, str(again.url)).text
    assert job_of(page)["state"] == "finished" and job_of(page)["discarded"] == "3"
    assert "&lt;b&gt;bold&lt;/b&gt; move" in page and "<b>bold</b>" not in page
    assert project.state.open_counts("reg").dead_letters == 0


def test_a_console_stopped_mid_job_keeps_what_was_done_and_leaves_the_rest_open(
    many: Project, mock_server: httpx.Client
) -> None:
    project = many
    refs = failing_remote(project, mock_server, count=91)
    slow_remote(mock_server, [])
    inner = console_app(project, Logins({USER: PASSWORD}))
    with TestClient(standalone_app(inner)) as client:
        log_in(client)
        started = client.post("/ui/dead-letters/apply", data=group_form(client, "replay"))
        job_url = str(started.url)
        deadline = time.monotonic() + 30
        while int(job_of(client.get(job_url).text)["done"]) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert inner.state.console.jobs.shutdown() == []  # what OpenConsole.close does first
        page = client.get(job_url).text
        shown = job_of(page)
        assert shown["state"] == "interrupted" and "still open" in page
        done = int(shown["done"])
        assert 0 < done < 91 and shown["delivered"] == str(done)
        refused = client.post("/ui/dead-letters/apply", data=group_form(client, "replay"))
        assert refused.status_code == 409 and "stopping" in refused.text
    # exactly what the job reached is delivered and closed; the rest is open, and the trail says how many
    delivered = {r["entityGuid"] for r in remote_records(mock_server)} & set(refs)
    assert len(delivered) == done
    assert project.state.open_counts("reg").dead_letters == 91 - done
    (action,) = project.state.actions(action="replay")
    assert action.detail["letters"] == done and action.detail["outcome"] == "stopped"
    assert "asked to stop" in action.detail["error"]


def test_a_replay_or_discard_of_a_connector_another_process_holds_is_refused_with_a_409(
    project: Project, mock_server: httpx.Client, client: TestClient, tmp_path: Path
) -> None:
    """Another console replica, a ``dcsync`` run or a CLI replay holds the connector's lease: neither
    action starts a job (a discard would close letters under a run working on them), and the page names
    the holder; once it lets go, the discard goes through."""
    from connector_core.state import SqliteStateStore

    failing_remote(project, mock_server, count=3)
    log_in(client)
    other = SqliteStateStore(tmp_path / "state.db")  # another process's connection to the store
    try:
        with other.lease("reg"):
            answers = [
                client.post("/ui/dead-letters/apply", data=group_form(client, "replay")),
                client.post("/ui/dead-letters/apply", data=group_form(client, "discard", note="dup")),
            ]
    finally:
        other.close()
    for answer in answers:
        assert answer.status_code == 409, answer.text
        assert "connector &#39;reg&#39; is already running (lease held by pid " in answer.text
    assert project.state.open_counts("reg").dead_letters == 3 and not project.state.actions(action="discard")
    assert client.get("/ui/jobs").text.count('class="job"') == 0
    done = client.post("/ui/dead-letters/apply", data=group_form(client, "discard", note="dup"))
    assert job_of(ended_job(client, str(done.url)).text)["discarded"] == "3"
    assert client.get("/ui/jobs/999").status_code == 404


def test_a_discard_job_that_loses_the_lease_race_fails_in_one_line(
    project: Project, mock_server: httpx.Client
) -> None:
    """The lease taken by another process between the page's check and the job's start: the job fails
    with the same line, closing nothing."""
    from connector_core.console.jobs import Jobs

    failing_remote(project, mock_server, count=3)
    with TestClient(app_for(project)) as client:
        log_in(client)
        real_start = Jobs.start

        def start_late(self, **kw):  # type: ignore[no-untyped-def]
            with project.state.lease("reg"):
                job = real_start(self, **kw)
                deadline = time.monotonic() + 10
                while job.running and time.monotonic() < deadline:
                    time.sleep(0.02)
            return job

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Jobs, "start", start_late)
            started = client.post("/ui/dead-letters/apply", data=group_form(client, "discard", note="x"))
        shown = job_of(ended_job(client, str(started.url)).text)
    assert shown["state"] == "failed" and "already running" in shown["error"]
    assert project.state.open_counts("reg").dead_letters == 3 and not project.state.actions(action="discard")


def test_the_mapping_explorer_shows_a_removed_member_without_its_old_household(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """The payload the explorer shows is the push's: a member its group no longer lists (after
    ``remove-member``; its own ``parentGuid`` stays) goes with the household field null."""
    from sync_support import event

    mapping = Path(__file__).resolve().parents[1] / "mappings" / "datacollect-registrant.yaml"
    project = make_project(f"    mapping: {mapping}\n")
    member = {"guid": "m2", "entityName": "individual", "parentGuid": "grp", "first_name": "Mary"}
    project.eventlog.append(
        [
            event(
                "g1",
                "grp",
                "create-group",
                {"entityName": "household", "household_name": "Smith", "members": [member]},
            ),
        ]
    )
    from connector_core.sync.runner import run_connector

    assert run_connector(project, "reg", pull=False).ok  # the household is linked: the field has its id
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    with TestClient(app_for(project)) as client:
        log_in(client)
        page = client.get("/ui/mapping/reg/m2").text
    payload = page.split('id="payload">')[1].split("</pre>")[0]
    assert "parent_ref" in payload and "null" in payload.split("parent_ref")[1].split(",")[0], payload


def test_the_mapping_explorer_shows_a_member_only_its_group_lists_with_that_household(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """A ``create-group`` member with no ``parentGuid`` of its own is the group's member (the push sends it
    so); once delivered, the explorer shows the payload with the household's id, not null."""
    from sync_support import event

    from connector_core.sync.runner import run_connector

    mapping = Path(__file__).resolve().parents[1] / "mappings" / "datacollect-registrant.yaml"
    project = make_project(f"    mapping: {mapping}\n")
    member = {"guid": "m3", "entityName": "individual", "first_name": "Tom"}
    household = {"entityName": "household", "household_name": "Jones", "members": [member]}
    project.eventlog.append([event("g1", "grp", "create-group", household)])
    assert run_connector(project, "reg", pull=False).ok
    group_id = project.state.get_link("reg", "grp").external_id
    with TestClient(app_for(project)) as client:
        log_in(client)
        page = client.get("/ui/mapping/reg/m3").text
    payload = page.split('id="payload">')[1].split("</pre>")[0]
    assert "parent_ref" in payload, payload
    assert group_id in payload.split("parent_ref")[1].split(",")[0], payload


def test_a_replay_job_the_remote_stops_part_way_shows_what_its_audit_record_says(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """The remote goes down for good after five pushes (two pages of 13 in batches of 7 and 6, and the
    first batch of the third): the job fails with its error line, and its page and the audit record give
    the same counts, those of the letters the store closed or saw refused again."""
    retry = "    retry:\n      max_attempts: 2\n      initial_delay: 0.01\n      max_delay: 0.02\n"
    project = make_project(extra="    systemic_after: 0\n" + retry)
    refs = failing_remote(project, mock_server, count=40)
    mock_server.put("/_control/faults", json={"reject": {refs[3]: REFUSAL}, "down_after": 5})
    with TestClient(app_for(project)) as client:
        log_in(client)
        started = client.post("/ui/dead-letters/apply", data=group_form(client, "replay"))
        shown = job_of(ended_job(client, str(started.url)).text)
    assert shown["state"] == "failed" and "gave up after retries" in shown["error"]
    closed = {d.ref for d in project.state.dead_letters("reg", status="replayed", limit=100)}
    assert closed == {r["entityGuid"] for r in remote_records(mock_server)} - {"ok1"}
    assert len(closed) == 2 * 13 + 7 - 1
    (action,) = project.state.actions(action="replay")
    assert action.actor == f"ui:{USER}" and action.detail["outcome"] == "stopped"
    assert action.detail["error"] == shown["error"]
    assert action.detail["letters"] == len(closed) + 1 and action.detail["delivered"] == len(closed)
    assert (shown["done"], shown["delivered"], shown["failed"]) == (
        str(action.detail["letters"]),
        str(action.detail["delivered"]),
        str(action.detail["failed_again"]),
    )
