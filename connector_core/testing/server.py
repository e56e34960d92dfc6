"""Serve an ASGI app on a free loopback port in a background thread.

Fake remotes are real HTTP servers so connectors are proven over real sockets (timeouts, resets, partial
writes), not through an in-process shortcut. Used by the tests, the benchmarks and ``dcsync demo``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServedApp:
    """A running server: ``url`` to aim clients at, ``stop()`` to shut it down."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)  # in a thread, uvicorn leaves the process's signals alone
        self._thread = threading.Thread(target=self._server.run, name=f"serve-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int | None = None) -> Iterator[ServedApp]:
    served = ServedApp(app, host=host, port=port).start()
    try:
        yield served
    finally:
        served.stop()


@contextmanager
def fake_server_process(name: str, timeout: float = 20.0) -> Iterator[str]:
    """``dcsync mock-server NAME`` in a child process, as a remote system runs beside dcsync; yields its URL
    once it accepts connections.

    A fake in a thread of the measuring process shares its interpreter: a benchmark would time both sides
    on one GIL, and a memory measurement would count the records the fake keeps.
    """
    port = free_port()
    with tempfile.TemporaryFile() as errors:  # a pipe nobody reads would block a chatty child
        child = subprocess.Popen(
            [sys.executable, "-m", "connector_core.cli", "mock-server", name, "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if child.poll() is not None or time.monotonic() > deadline:
                        child.kill()
                        child.wait(timeout=10)
                        errors.seek(0)
                        said = errors.read().decode(errors="replace").strip().splitlines()
                        raise RuntimeError(
                            f"the fake {name!r} did not start: {said[-1] if said else 'no output'}"
                        ) from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
