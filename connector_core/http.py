"""httpx helpers every connector's client shares.

httpx 0.28 ties each response and its body stream to each other (the stream keeps the response to record
``elapsed``), so a finished response is freed only by a cyclic garbage collection, not when its last
reference goes. A run that sends thousands of batches would keep every request and response body of the
run alive until the collector gets round to them: memory grows with the run, not with the batch. See
encode/httpx pull requests 3733 and 3746.
"""

from __future__ import annotations

import httpx

_DRAINED = httpx.ByteStream(b"")


def released(response: httpx.Response) -> httpx.Response:
    """``response`` with its spent stream dropped, so it is freed as soon as the caller lets go of it.

    Only a read, closed response is touched: its ``content``, ``json()``, headers and ``elapsed`` stay as
    they are. A streaming response that is still open is returned unchanged.
    """
    if response.is_closed:
        response.stream = _DRAINED
    return response


def never_sent(exc: httpx.HTTPError) -> bool:
    """Whether a failed request cannot have reached the remote: the connection itself was refused or
    never opened. Raise the connector's error with ``unsent=`` this, so the engine knows the creates of
    that batch need no lookup on the next run (:class:`connector_core.connector.ConnectorError`)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
