"""The operator console as an ASGI app: ``console_app`` (mounted at ``/ui`` by ``dcsync ui`` and, with
``serve: {ui: true}``, by ``dcsync serve``) and ``standalone_app`` (the console plus ``/healthz``).

Every page needs a login; an unauthenticated GET is sent to the login page and anything else gets 401.
Every POST carries the session's CSRF token (403 without it). Nothing is fetched from elsewhere: the pages
are server-rendered HTML with inline CSS and inline SVG, with no JavaScript.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connector_core.console.auth import Logins, Throttle, csrf_token
from connector_core.console.context import Console, redirect, root, user_of
from connector_core.console.pages import audit, conflicts, dead_letters, jobs, mapping, overview, runs

PUBLIC = frozenset({"/login"})
COOKIE = "dcsync_ui"


class LoginRequired:
    """Pure ASGI: everything but the login page needs a session with a user."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"][len(str(scope.get("root_path", ""))) :] or "/"
        if path in PUBLIC or user_of(request) is not None:
            await self.app(scope, receive, send)
            return
        response: Response
        if request.method in ("GET", "HEAD"):
            wanted = path + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            response = RedirectResponse(
                f"{root(request)}/login?{urlencode({'next': wanted})}", status_code=303
            )
        else:
            response = PlainTextResponse("log in first", status_code=401)
        await response(scope, receive, send)


def console_app(
    project: Any,
    logins: Logins,
    *,
    secret_key: str | None = None,
    session_hours: float = 12,
    https_only: bool = False,
    throttle: Throttle | None = None,
) -> Starlette:
    """The console over an open ``project`` (which it uses, and the caller closes)."""
    console = Console(project, logins, throttle=throttle or Throttle())

    async def login_page(request: Request) -> Response:
        return console.render(request, "login.html", next=_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await console.form(request)
        name = str(form.get("name") or "").strip()
        password = str(form.get("password") or "")
        wanted = _next(str(form.get("next") or ""))
        client = request.client.host if request.client else "?"
        keys = (f"ip:{client}", f"name:{name}")
        if console.throttle.blocked(*keys):
            return console.render(
                request, "login.html", 429, next=wanted, error="too many failed logins: wait a few minutes"
            )
        who = console.logins.check(name, password) if console.logins.configured else None
        if who is None:
            console.throttle.failed(*keys)
            return console.render(request, "login.html", 401, next=wanted, error="wrong name or password")
        console.throttle.succeeded(*keys)
        request.session.clear()  # a fresh session: nothing carried over from before the login
        request.session.update({"user": who, "since": int(time.time())})
        csrf_token(request.session)
        await console.run(lambda: project.state.record_action(f"ui:{who}", "login"))
        return redirect(request, wanted)

    async def logout(request: Request) -> Response:
        await console.form(request)
        request.session.clear()
        return redirect(request, "/login")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if user_of(request) is None:
            return PlainTextResponse(exc.detail, status_code=exc.status_code)
        return console.render(request, "error.html", exc.status_code, message=exc.detail)

    routes = [
        Route("/login", login_page, methods=["GET"], name="login_page"),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        *overview.routes(console),
        *runs.routes(console),
        *dead_letters.routes(console),
        *jobs.routes(console),
        *conflicts.routes(console),
        *mapping.routes(console),
        *audit.routes(console),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret_key or secrets.token_urlsafe(32),
                session_cookie=COOKIE,
                max_age=int(session_hours * 3600),
                same_site="strict",
                https_only=https_only,
            ),
            Middleware(LoginRequired),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.console = console  # OpenConsole.close stops its jobs before the project closes
    return app


def _next(value: str | None) -> str:
    """Where to go after logging in: a path inside the console only (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def standalone_app(console: Starlette) -> Starlette:
    """``dcsync ui``: the console under ``/ui`` and an unauthenticated ``/healthz``."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/", home, methods=["GET"]),
            Mount("/ui", app=console),
        ]
    )
