"""connector_core.http.released: a finished httpx response is freed by reference counting alone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connector_core.http import released
from connector_core.testing.server import serve


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(Starlette(routes=[Route("/", _ok)])) as served:
        yield served.url


def _freed_without_the_collector(url: str, wrap: bool) -> bool:
    with httpx.Client(base_url=url) as client:
        gc.disable()
        try:
            response = client.get("/")
            if wrap:
                response = released(response)
            assert response.json() == {"ok": True} and response.elapsed.total_seconds() >= 0
            gone = weakref.ref(response)
            del response
            return gone() is None
        finally:
            gc.enable()


def test_a_released_response_is_freed_when_dropped_and_keeps_what_it_read(url: str) -> None:
    assert _freed_without_the_collector(url, wrap=True)
    assert not _freed_without_the_collector(url, wrap=False), "httpx no longer ties a response to its stream"


def test_an_open_streaming_response_is_left_alone(url: str) -> None:
    with httpx.Client(base_url=url) as client, client.stream("GET", "/") as response:
        stream = response.stream
        assert released(response).stream is stream
        assert response.read() == b'{"ok":true}'
