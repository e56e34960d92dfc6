"""Shared pieces of the OpenFn tests: settings aimed at the seeded fake, a project file, event helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connector_core.events import FormSubmission
from connector_core.retry import RetryPolicy
from connectors.openfn.fake.seed import API_KEY, PAT, RESULTS_COLLECTION, TRIGGER_ID

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SAMPLES = HERE / "samples"
MAPPING = REPO / "mappings" / "openfn.yaml"

FAST_RETRY = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.05, max_elapsed=20)


def settings(url: str, **overrides: Any) -> dict[str, Any]:
    """Connector settings for the seeded fake: its API-key trigger and its results collection."""
    base: dict[str, Any] = {
        "url": url,
        "trigger": TRIGGER_ID,
        "api_key": API_KEY,
        "collection": RESULTS_COLLECTION,
        "token": PAT,
        "key_pattern": "dc:result:*",
        "timeout": 5.0,
        "lag_seconds": 1.0,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def write_project(
    directory: Path,
    url: str,
    *,
    name: str = "fn",
    instance: dict[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """A ``dcsync.yaml`` with one ``openfn`` connector (JSON is YAML, so values need no quoting care)."""
    connector: dict[str, Any] = {"type": "openfn", "batch_size": 100, "page_size": 500}
    connector.update(instance or {})
    connector["settings"] = settings(url, **overrides)
    path = directory / "dcsync.yaml"
    path.write_text(json.dumps({"version": 1, "connectors": {name: connector}}, indent=2))
    return path


def event(
    guid: str, entity: str, kind: str, data: dict[str, Any], ts: str = "2025-03-01T10:00:00.000Z"
) -> FormSubmission:
    return FormSubmission(guid=guid, entity_guid=entity, type=kind, data=data, timestamp=ts, user_id="admin")


def entities_in(body: Any) -> list[dict[str, Any]]:
    return list(body.get("entities") or []) if isinstance(body, dict) else []
