"""What every page handler shares: the open project, the templates, who is logged in, the CSRF check.

The project is opened once and shared by the pages; a lock serialises what they do with it (a store and a
log hold one connection each), and the pages run on Starlette's thread pool, never on the event loop. The
lock is granted in the order asked for, so a background job (a replay of 100,000 letters) that lets go of it
between pages queues behind the pages waiting rather than taking it straight back.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from connector_core.console.auth import CSRF_FIELD, Logins, Throttle, csrf_ok, csrf_token

if TYPE_CHECKING:
    from connector_core.console.jobs import Jobs

T = TypeVar("T")

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM = 1 << 20
PAGE = 50
"""Rows per page of every list."""


class FairLock:
    """A lock granted first come, first served (``threading.Lock`` is not: a thread that releases and asks
    again usually wins). :meth:`pause` is a job's turn between pages: every page that was waiting runs first.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self) -> None:
        me = object()
        with self._cond:
            self._queue.append(me)
            try:
                while self._held or self._queue[0] is not me:
                    self._cond.wait()
            except BaseException:
                self._queue.remove(me)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._held = True

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of a FairLock that is not held")
            self._held = False
            self._cond.notify_all()

    def pause(self) -> None:
        """Let go and ask again, behind whoever is waiting now (the holder must hold it)."""
        self.release()
        self.acquire()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Console:
    project: Any
    logins: Logins
    throttle: Throttle = field(default_factory=Throttle)
    lock: FairLock = field(default_factory=FairLock)
    jobs: Jobs = field(init=False)
    templates: Jinja2Templates = field(default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES)))

    def __post_init__(self) -> None:
        from connector_core.console.jobs import Jobs

        self.jobs = Jobs(self.lock)

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` on the thread pool, holding the project (its stores are one connection each)."""

        def locked() -> T:
            with self.lock:
                return work()

        return await run_in_threadpool(locked)

    def render(self, request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
        values.setdefault("user", user_of(request))
        values["csrf"] = csrf_token(request.session)
        values["root"] = root(request)
        values["nav"] = template.split(".")[0]
        values["qs"] = query_string
        return self.templates.TemplateResponse(request, template, values, status_code=status_code)

    async def form(self, request: Request) -> FormData:
        """The POSTed form, refused with 403 unless it carries the session's CSRF token.

        Parsed here (the pages' forms are url-encoded, and bounded) rather than by ``python-multipart``,
        one dependency fewer for a few small forms."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/x-www-form-urlencoded", ""):
            raise HTTPException(415, "forms are sent url-encoded")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise HTTPException(413, f"form over {MAX_FORM} bytes")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=10_000)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "malformed form") from None
        form = FormData(list[tuple[str, str | Any]](pairs))
        submitted = form.get(CSRF_FIELD)
        if not csrf_ok(request.session, submitted if isinstance(submitted, str) else None):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return form


def query_string(base: dict[str, Any] | None = None, **more: Any) -> str:
    """``a=1&b=2`` from the values that are set (a link that keeps the page's filters)."""
    from urllib.parse import urlencode

    merged = {**(base or {}), **more}
    return urlencode({k: v for k, v in merged.items() if v is not None and v != ""})


def root(request: Request) -> str:
    """Where the console is mounted (``/ui``): links are written from it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def user_of(request: Request) -> str | None:
    name = request.session.get("user")
    return name if isinstance(name, str) else None


def actor(request: Request) -> str:
    """The audit trail's name for whoever is logged in."""
    return f"ui:{user_of(request)}"


def redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(f"{root(request)}{path}", status_code=303)


def opt(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def opt_int(request: Request, name: str) -> int | None:
    value = opt(request, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number") from None
