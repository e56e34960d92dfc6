"""Helpers shared by the OpenSPP tests (imported by module name, as the rest of the suite does)."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.openspp.fake import DATABASE


class Rpc:
    """A bare JSON-RPC caller for protocol tests (no classification, the raw envelope back)."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=10)
        self.uids: dict[str, int] = {}

    def raw(self, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "method": "call", "id": 7, "params": params, **extra}
        response = self.http.post(f"{self.url}/jsonrpc", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def call(self, service: str, method: str, *args: Any) -> dict[str, Any]:
        return self.raw({"service": service, "method": method, "args": list(args)})

    def login(self, user: str = "admin") -> int:
        if user not in self.uids:
            self.uids[user] = self.call("common", "authenticate", DATABASE, user, user, {})["result"]
        return self.uids[user]

    def ex(
        self,
        model: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        *,
        user: str = "admin",
    ) -> dict[str, Any]:
        call_args: list[Any] = [DATABASE, self.login(user), user, model, method, args]
        if kwargs is not None:
            call_args.append(kwargs)
        return self.call("object", "execute_kw", *call_args)

    def ok(
        self,
        model: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        *,
        user: str = "admin",
    ) -> Any:
        answer = self.ex(model, method, args, kwargs, user=user)
        assert "error" not in answer, answer["error"]["data"]["message"]
        return answer["result"]

    def err(
        self,
        model: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        *,
        user: str = "admin",
    ) -> dict[str, Any]:
        answer = self.ex(model, method, args, kwargs, user=user)
        assert "error" in answer, f"expected an error, got {answer!r}"
        return answer["error"]["data"]
