"""A project opened from its ``dcsync.yaml``: the event log, the state store, plugins and connectors.

Everything that can be wrong in the configuration (unknown connector type, bad settings, a mapping that does
not validate) is found here, before any record moves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector_core.config import ConfigError, LoadedConfig, load_config, resolve_settings, validate_settings
from connector_core.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    PermanentError,
    PullPage,
    PushRecord,
    PushResult,
)
from connector_core.eventlog import open_event_log
from connector_core.eventlog.base import EventLog
from connector_core.logs import register_secrets_of, register_url_credentials
from connector_core.mapping import MappingError, MappingSet, identity_mapping, load_mapping
from connector_core.mapping.errors import MappingIssue
from connector_core.plugins import PluginError, PluginHost, load_plugins
from connector_core.scopes import FieldScopes, check_push_scope, unknown_entities
from connector_core.state import open_state_store
from connector_core.state.lease import LeasedStateStore

log = logging.getLogger("dcsync.plugins")


class OfflineConnector(Connector):
    """Stands in for a connector that may not be contacted (its ``${VAR}`` secrets are not set) in a
    read-only project: every call that would reach the remote fails, naming why, and nothing is sent."""

    type_name = "offline"

    def __init__(self, name: str, reason: str):
        super().__init__(name, ConnectorConfig())
        self.reason = reason

    def _refuse(self) -> PermanentError:
        return PermanentError(f"{self.name}: the remote is not contacted: {self.reason}")

    def check(self) -> CheckResult:
        raise self._refuse()

    def push(self, batch: Sequence[PushRecord]) -> list[PushResult]:
        raise self._refuse()

    def pull(self, cursor: str | None, limit: int) -> PullPage:
        raise self._refuse()

    def lookup(self, refs: Sequence[str]) -> dict[str, str]:
        raise self._refuse()


@dataclass
class Project:
    config: LoadedConfig
    host: PluginHost
    eventlog: EventLog
    state: LeasedStateStore
    read_only: bool = False
    _mappings: dict[str, MappingSet] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        host: PluginHost | None = None,
        strict: bool = False,
        read_only: bool = False,
    ) -> Project:
        """Open the project at ``path``.

        ``read_only`` is for the commands that only look (``status``, ``runs``, ``dlq list``/``show``, ``log
        stats``/``export``, ``run --dry-run``): the event log and the state store are opened without creating
        any file, schema or lock, and a store that does not exist yet reads as empty. Connector settings are
        resolved (their ``${VAR}``s read) only when a connector is built, by the commands that contact it.
        """
        loaded = load_config(path)
        host = host or load_plugins(strict=strict)
        mappings = check_project(loaded, host)  # every config error before a store is opened or created
        project = loaded.project
        eventlog = open_event_log(project.eventlog, loaded.base_dir, read_only=read_only)
        try:
            state = open_state_store(project.state, loaded.base_dir, read_only=read_only)
        except BaseException:
            eventlog.close()
            raise
        return cls(
            config=loaded, host=host, eventlog=eventlog, state=state, read_only=read_only, _mappings=mappings
        )

    def connector_names(self) -> list[str]:
        return list(self.config.project.connectors)

    def instance(self, name: str) -> Any:
        try:
            return self.config.project.connectors[name]
        except KeyError:
            known = ", ".join(self.config.project.connectors) or "none"
            raise ConfigError(
                [f"{self.config.path}: no connector named {name!r} (configured: {known})"]
            ) from None

    def connector_class(self, name: str) -> type[Connector]:
        instance = self.instance(name)
        try:
            return self.host.connector_class(instance.type)
        except PluginError as exc:
            raise self.config.error(("connectors", name, "type"), str(exc)) from None

    def settings(self, name: str) -> Any:
        """``name``'s settings, validated against its type's config model, with their ``${VAR}``s read now.

        Raises :class:`ConfigError` naming file:line:column of a variable that is not set.
        """
        settings = validate_settings(self.config, name, self.connector_class(name).config_model)
        register_secrets_of(settings)
        return settings

    def unresolved(self, name: str) -> list[str]:
        """One line per ``${VAR}`` of ``name``'s settings that is not set (empty: every one resolves)."""
        self.instance(name)  # an unknown name is its own error
        try:
            resolve_settings(self.config, name)
        except ConfigError as exc:
            return exc.problems
        return []

    def build_connector(self, name: str) -> Connector:
        """The connector ``name``, ready to contact its remote.

        In a read-only project a connector whose secrets are not set is built offline: the push plan of a
        dry run needs no remote, and anything that would reach it fails with the unset variable's line.
        """
        cls = self.connector_class(name)
        if self.read_only and (problems := self.unresolved(name)):
            return OfflineConnector(name, "; ".join(problems))
        return cls(name, self.settings(name))

    def mapping(self, name: str) -> MappingSet:
        if name not in self._mappings:
            self.instance(name)
            self._mappings[name] = _load_mapping(self.config, name)
        return self._mappings[name]

    def close(self) -> None:
        self.eventlog.close()
        self.state.close()


def _load_mapping(loaded: LoadedConfig, name: str) -> MappingSet:
    instance = loaded.project.connectors[name]
    if instance.mapping is None:
        return identity_mapping()
    path = loaded.resolve_path(instance.mapping)
    if not path.exists():
        raise loaded.error(("connectors", name, "mapping"), f"mapping file {path} does not exist")
    try:
        mappings = load_mapping(path)
    except MappingError as exc:
        # each issue keeps its mapping file, line, column, mapping and field: one line each
        raise ConfigError([str(issue) for issue in exc.issues]) from None
    _check_scopes(loaded, name, mappings)
    return mappings


def scope_problems(loaded: LoadedConfig, name: str, mappings: MappingSet) -> list[str]:
    """A connector's field scopes against its mapping: a scope key no mapping selects (at its line in
    ``dcsync.yaml``), and every push target outside the push scope (at its line in the mapping file)."""
    scopes_config = loaded.project.connectors[name].scopes
    scopes = FieldScopes.of(name, scopes_config)
    if scopes_config is None or scopes is None:
        return []
    problems = [
        f"{loaded.where('connectors', name, 'scopes', direction, key)}: "
        f"connectors.{name}.scopes.{direction}.{key}: {message}"
        for direction, key, message in unknown_entities(scopes_config, mappings)
    ]
    problems.extend(
        str(issue) for issue in sorted(check_push_scope(mappings, scopes), key=MappingIssue.sort_key)
    )
    return problems


def _check_scopes(loaded: LoadedConfig, name: str, mappings: MappingSet) -> None:
    problems = scope_problems(loaded, name, mappings)
    if problems:
        raise ConfigError(problems)


def check_project(loaded: LoadedConfig, host: PluginHost) -> dict[str, MappingSet]:
    """Everything ``run`` refuses in a project file, checked without opening a store: each connector's
    type, settings and mapping. ``schedule list`` and ``Project.open`` share it, so they never disagree.
    Settings whose ``${VAR}`` is not set are left to the commands that contact that connector: a run of
    one connector, ``status`` or ``dlq list`` need no other connector's secret.

    Every secret the settings hold is registered for redaction here, so even a command that only reads
    the state store (``runs``, ``dlq show``) masks a secret an older run may have stored.
    """
    project = loaded.project
    register_secrets_of(project.eventlog)  # tokens, passwords and URLs with passwords never reach a log
    register_secrets_of(project.state)
    register_secrets_of(project.workers)
    for problem in host.install_transforms():
        log.warning("plugin transform skipped: %s", problem)
    problems: list[str] = []
    mappings: dict[str, MappingSet] = {}
    for name, instance in project.connectors.items():
        register_url_credentials(instance.settings)
        try:
            try:
                cls = host.connector_class(instance.type)
            except PluginError as exc:
                raise loaded.error(("connectors", name, "type"), str(exc)) from None
            try:
                resolve_settings(loaded, name)
            except ConfigError:
                pass  # a ${VAR} not set: only the commands that contact this connector need it (and say so)
            else:
                register_secrets_of(validate_settings(loaded, name, cls.config_model))
            mappings[name] = _load_mapping(loaded, name)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return mappings
