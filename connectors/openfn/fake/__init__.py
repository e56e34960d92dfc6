"""A fake OpenFn Lightning that speaks the real wire protocol (reference openfn.md §6).

``create_app()`` gives the ASGI app; ``app.state.lightning`` is the :class:`FakeLightning` a test drives
directly (clock, faults, quotas, run handler, assertions). ``dcsync mock-server openfn`` serves it standalone
with the identifiers of :mod:`connectors.openfn.fake.seed`.
"""

from connectors.openfn.fake.app import basic_auth, create_app
from connectors.openfn.fake.faults import Fault, FaultPlan
from connectors.openfn.fake.seed import companion_job, seed_defaults
from connectors.openfn.fake.store import Dataclip, FakeClock, FakeLightning, RunOutcome

__all__ = [
    "Dataclip",
    "FakeClock",
    "FakeLightning",
    "Fault",
    "FaultPlan",
    "RunOutcome",
    "basic_auth",
    "companion_job",
    "create_app",
    "seed_defaults",
]
