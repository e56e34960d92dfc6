"""The operator console in a real browser (headless Chromium through Selenium), against the console served
by uvicorn on a free loopback port and the mock remote as a real HTTP server.

Skipped with the reason when Chromium or chromedriver is missing, unless ``DCSYNC_REQUIRE_BROWSER=1`` (CI),
which turns the skip into a failure. Selenium is pointed at the installed binaries explicitly, so Selenium
Manager never downloads a browser. With ``DCSYNC_CONSOLE_SCREENSHOTS=DIR`` the tests also save the pages as
``DIR/console-*.png`` (1280x800): that is how docs/img/console-*.png are made (docs/console.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import PASSWORD, REFUSAL, USER, conflict, failing_remote
from sync_support import FAST_RETRY, event, remote_records

from connector_core.console import open_console
from connector_core.console.app import standalone_app
from connector_core.project import Project
from connector_core.sync.runner import run_connector
from connector_core.testing.server import serve

CHROMIUM = os.environ.get("DCSYNC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("DCSYNC_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
SHOTS = os.environ.get("DCSYNC_CONSOLE_SCREENSHOTS")
PAGES = ["/ui/", "/ui/runs", "/ui/runs/1", "/ui/dead-letters", "/ui/dead-letters/1", "/ui/conflicts",
         "/ui/conflicts/1", "/ui/mapping", "/ui/mapping/reg/p0", "/ui/audit"]  # fmt: skip


def _required() -> bool:
    return os.environ.get("DCSYNC_REQUIRE_BROWSER", "").strip() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        why = f"no browser for the console tests: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"  # noqa: E501
        if _required():
            pytest.fail(f"DCSYNC_REQUIRE_BROWSER=1: {why}")
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--disable-extensions", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    browser.implicitly_wait(10)  # a click that submits a form returns before the next page is there
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def console(driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """Starts the console of the project in ``tmp_path`` (a real uvicorn server); returns its URL."""
    started: list[Any] = []
    monkeypatch.setenv("DCSYNC_TEST_UI_PW", PASSWORD)
    driver.delete_all_cookies()

    def start() -> str:
        config = tmp_path / "dcsync.yaml"
        config.write_text(config.read_text() + f"ui:\n  users:\n    {USER}: ${{DCSYNC_TEST_UI_PW}}\n")
        opened = open_console(config, host="127.0.0.1")
        served = serve(standalone_app(opened.app))
        started.append((opened, served))
        return served.__enter__().url

    yield start
    for opened, served in started:
        served.__exit__(None, None, None)
        opened.close()


def _shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"console-{name}.png"))


def _by(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def _all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _wait_for_text(driver: Any, text: str) -> None:
    """Until the page (the next one, after a click that submits a form) shows ``text``."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: text in d.find_element("tag name", "body").text
    )


def _wait_for_url(driver: Any, part: str) -> None:
    """Until the browser is on a page whose URL holds ``part`` (a click that submits a form returns before
    the answer has loaded)."""
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: part in d.current_url)


def _log_in(driver: Any, url: str) -> None:
    driver.get(f"{url}/ui/")
    assert _all(driver, "#login-form"), "the console did not ask for a login"
    _shot(driver, "login")
    _by(driver, "#name").send_keys(USER)
    _by(driver, "#password").send_keys(PASSWORD)
    _by(driver, "#login").click()
    assert _by(driver, "#who").text == USER


def test_a_failing_connector_is_seen_its_dead_letters_replayed_once_the_remote_is_fixed(
    project: Project, mock_server: httpx.Client, console: Callable[[], str], driver: Any
) -> None:
    for i, outage in enumerate([False, True, False, True, False]):  # a history to chart
        project.eventlog.append(
            event(f"h{i}-{k}", f"h{i}-{k}", "create-individual", {"entityName": "individual"})
            for k in range(i + 1)
        )
        mock_server.put("/_control/faults", json={"script": [{"status": 503}] * 20} if outage else {})
        run_connector(project, "reg", pull=False, retry=FAST_RETRY)
    refs = failing_remote(project, mock_server, count=3)
    url = console()
    _log_in(driver, url)
    row = _by(driver, 'tr[data-connector="reg"]')
    assert _by(row, ".outcome").text == "degraded"
    assert len(_all(driver, "svg.bars rect")) >= 2 * 6  # a bar per run in both charts
    _shot(driver, "overview")
    _by(row, "a.dead-letters").click()
    (group,) = _all(driver, "tr.group")
    assert REFUSAL in group.text and _by(group, ".count").text == "3"
    _shot(driver, "dead-letters")
    _by(group, "a.view").click()
    assert len(_all(driver, "tr.letter")) == 3
    _all(driver, "tr.letter a")[0].click()
    assert REFUSAL in _by(driver, "#reason").text and "first_name" in _by(driver, "#payload").text
    _shot(driver, "dead-letter")
    driver.back()

    mock_server.put("/_control/faults", json={"latency": 0.5})  # the remote is fixed (and slow to answer)
    _by(driver, "button.replay-group").click()
    assert _by(driver, "#confirm-count").text == "3"
    _by(driver, "#note").send_keys("the registry accepts + prefixes again")
    _shot(driver, "confirm")
    assert project.state.open_counts("reg").dead_letters == 3  # nothing happens before confirming
    _by(driver, "#confirm").click()
    _wait_for_url(driver, "/ui/jobs/")  # the replay is a job: its page, reloading itself until it ends
    assert _by(driver, "#job-actor").text == f"ui:{USER}" and _by(driver, "#job-total").text == "3"
    _wait_for_text(driver, "replayed 3: 3 delivered, 0 failed again")
    assert _by(driver, "#job-state").text == "finished" and _by(driver, "#job-delivered").text == "3"
    _shot(driver, "job")
    assert {r["entityGuid"] for r in remote_records(mock_server)} >= set(refs)
    assert project.state.open_counts("reg").dead_letters == 0
    assert {d.status for d in project.state.dead_letters("reg", status=None)} == {"replayed"}

    driver.get(f"{url}/ui/audit")
    actions = [(_by(r, ".actor").text, _by(r, ".what").text) for r in _all(driver, "tr.action")]
    assert actions[0] == (f"ui:{USER}", "replay") and (f"ui:{USER}", "login") in actions
    (replay,) = project.state.actions(action="replay")
    assert replay.detail == {
        "letters": 3,
        "delivered": 3,
        "failed_again": 0,
        "note": "the registry accepts + prefixes again",
    }
    _shot(driver, "audit")
    driver.get(f"{url}/ui/runs?connector=reg")
    assert "degraded" in _by(driver, "#runs").text
    _shot(driver, "runs")


def test_a_conflict_is_resolved_field_by_field_in_the_browser(
    make_project: Callable[..., Project], mock_server: httpx.Client, console: Callable[[], str], driver: Any
) -> None:
    project = make_project("    conflict_policy: manual\n")
    conflict_id = conflict(project, mock_server)
    url = console()
    _log_in(driver, url)
    driver.get(f"{url}/ui/conflicts")
    _by(driver, f'a[href="/ui/conflicts/{conflict_id}"]').click()
    differing = _all(driver, "tr.field.differs")
    assert [r.get_attribute("data-field") for r in differing] == ["first_name", "phone_number"]
    _shot(driver, "conflict")
    _by(driver, 'input[name="field:first_name"][value="external"]').click()
    _by(driver, 'input[name="field:phone_number"][value="local"]').click()
    _by(driver, "#resolve-fields").click()
    assert "fields: first_name=external, phone_number=local" in _by(driver, "#flash").text
    entity = project.eventlog.get_entity("c1")
    assert entity is not None and (entity.data["first_name"], entity.data["phone_number"]) == ("Ann", "+2")
    assert run_connector(project, "reg", retry=FAST_RETRY).ok  # the next push sends the field kept local
    (record,) = [r for r in remote_records(mock_server) if r["entityGuid"] == "c1"]
    assert (record["data"]["first_name"], record["data"]["phone_number"]) == ("Ann", "+2")

    driver.get(f"{url}/ui/mapping")
    _by(driver, "#q").send_keys("Ann")
    _by(driver, "#search button").click()
    _by(driver, 'a[href="/ui/mapping/reg/c1"]').click()
    assert '"phone_number": "+2"' in _by(driver, "#payload").text
    _shot(driver, "mapping")


def test_every_page_asks_for_a_login_and_a_post_without_the_csrf_token_is_refused(
    project: Project, mock_server: httpx.Client, console: Callable[[], str], driver: Any
) -> None:
    failing_remote(project, mock_server, count=1)
    url = console()
    for page in PAGES:
        driver.get(f"{url}{page}")
        assert _all(driver, "#login-form"), f"{page} answered without a login"
    _log_in(driver, url)
    driver.get(f"{url}/ui/dead-letters?connector=reg")
    driver.execute_script("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    _by(driver, "button.discard-group").click()
    _wait_for_text(driver, "CSRF token")
    assert project.state.open_counts("reg").dead_letters == 1
    # and without a session at all, an action is 401 (the browser's cookie is not sent by httpx)
    assert httpx.post(f"{url}/ui/dead-letters/apply", data={"action": "discard"}).status_code == 401
