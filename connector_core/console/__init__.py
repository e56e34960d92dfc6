"""The operator console (``dcsync ui``, or ``/ui`` of ``dcsync serve``): docs/console.md.

:func:`open_console` is the one place the console is put together from a project file: its logins read
from the environment, the binding checked, the project opened for the pages to share.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector_core.console.auth import Logins, UnsafeBinding, check_binding, is_loopback

SECRET_ENV = "DCSYNC_UI_SECRET"
"""Signs the session cookie; without it a random key per process (logins end when the console restarts)."""

__all__ = ["OpenConsole", "UnsafeBinding", "open_console"]


@dataclass
class OpenConsole:
    app: Any  # the console's Starlette app, to mount at /ui
    project: Any
    logins: Logins
    generated_token: str | None = None
    """Set when no login was configured (loopback only): the token printed once at start."""

    def close(self) -> None:
        """Stop the console's jobs after their current page (what they did is committed; the rest of their
        letters stay open), then close the project, holding its lock so no page is using it."""
        console = getattr(self.app.state, "console", None)
        if console is None:
            self.project.close()
            return
        console.jobs.shutdown()
        with console.lock:
            self.project.close()


def open_console(config: Path, *, host: str, plugins: Any = None) -> OpenConsole:
    """Raises :class:`UnsafeBinding` (one line) before opening anything when ``host`` is not loopback and
    no login is configured; a ``ConfigError`` for an unset password variable."""
    from connector_core.config import load_config, resolve_ui_users
    from connector_core.console.app import console_app
    from connector_core.project import Project
    from connector_core.redaction import register_secret

    loaded = load_config(config)
    logins = Logins.from_environment(resolve_ui_users(loaded))
    check_binding(host, logins)
    generated = None
    if not logins.configured and is_loopback(host):
        generated = logins.token = secrets.token_urlsafe(18)
    for secret in (*logins.users.values(), logins.token):
        if secret:
            register_secret(secret)
    project = Project.open(config, host=plugins) if plugins is not None else Project.open(config)
    app = console_app(
        project,
        logins,
        secret_key=os.environ.get(SECRET_ENV) or None,
        session_hours=loaded.project.ui.session_hours,
    )
    return OpenConsole(app, project, logins, generated)
