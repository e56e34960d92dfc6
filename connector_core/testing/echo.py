"""A remote that echoes each request (headers and body) in its error answer, as many real servers do.

Placed in front of a connector's own fake (or alone), it forwards what ``passes`` allows and answers the rest
with ``status`` and a JSON body quoting the request: the ``Authorization``/``x-api-key`` headers, the query
string and the body, first in a one-line ``message`` (clients keep only the first few hundred characters of
an error) and again in full under ``request``. Whatever secret the connector sent comes straight back, in
the shape it was sent (plain in an Odoo JSON-RPC body, base64 in a ``Basic`` header).

Plugin authors can put it in front of their own fake to prove their connector leaks nothing
(``tests/test_secrets_echo.py`` does it for every built-in connector).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Passes = Callable[[str, str, bytes], bool]


class EchoingRemote:
    """ASGI app; ``mode`` is ``"writes"`` (echo only what ``passes`` refuses) or ``"all"`` (echo all but
    what ``always`` lets through, such as a handshake that carries no credential)."""

    def __init__(self, inner: Any = None, passes: Passes | None = None, always: Passes | None = None) -> None:
        self.inner = inner
        self.passes = passes or (lambda _method, _path, _body: False)
        self.always = always or (lambda _method, _path, _body: False)
        self.mode = "writes"
        self.status = 400
        self.echoed = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if self.inner is not None:
                await self.inner(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = (scope["method"], scope["path"], body)
        if self.inner is not None and (
            self.always(*request) or (self.mode == "writes" and self.passes(*request))
        ):
            delivered = False

            async def replay() -> dict[str, Any]:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return dict(await receive())

            await self.inner(scope, replay, send)
            return
        self.echoed += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        text = body.decode("utf-8", errors="replace")
        shown = [f"{k}: {headers[k]}" for k in ("authorization", "x-api-key", "cookie") if k in headers]
        query = scope.get("query_string", b"").decode("latin-1")
        message = " ".join([*shown, f"query: {query}", f"body: {text}"])
        payload = json.dumps(
            {"error": "echo", "message": message, "request": {"headers": headers, "body": text}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
