"""A faithful fake OpenSPP 17 (Odoo 17 + OpenG2P registry) server for tests, benchmarks and demos.

It is never more lenient than the real server (``odoo-observed.md`` wins over the source-derived spec where
they differ): what it accepts, Odoo accepts. ``create_app()`` builds the ASGI app, ``serve_fake()`` runs it
standalone, and ``app.state.fake`` (a :class:`FakeOpenSpp`) gives tests the clock, faults and state.
"""

from __future__ import annotations

from pathlib import Path

from connectors.openspp.fake.app import create_app
from connectors.openspp.fake.costs import CostModel
from connectors.openspp.fake.faults import FaultSpec
from connectors.openspp.fake.models import Flavour
from connectors.openspp.fake.seed import (
    ADMIN_API_KEY,
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    REGISTRAR_API_KEY,
    REGISTRAR_LOGIN,
    REGISTRAR_PASSWORD,
)
from connectors.openspp.fake.server import FakeOpenSpp

DATABASE = "openspp"


def serve_fake(
    port: int = 8069,
    host: str = "127.0.0.1",
    data_file: Path | None = None,
    *,
    costs: CostModel | None = None,
    flavour: Flavour = "openspp",
) -> None:
    """Serve a seeded fake until interrupted; ``costs`` defaults to ``DCSYNC_OPENSPP_FAKE_COSTS`` (off)."""
    import uvicorn

    app = create_app(seed=True, data_file=data_file, costs=costs or CostModel.from_env(), flavour=flavour)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = [
    "ADMIN_API_KEY",
    "ADMIN_LOGIN",
    "ADMIN_PASSWORD",
    "CostModel",
    "DATABASE",
    "REGISTRAR_API_KEY",
    "REGISTRAR_LOGIN",
    "REGISTRAR_PASSWORD",
    "FakeOpenSpp",
    "FaultSpec",
    "create_app",
    "serve_fake",
]
