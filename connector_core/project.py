"""A project opened from its ``dcsync.yaml``: the event log, the state store, plugins and connectors.

Everything that can be wrong in the configuration (unknown connector type, bad settings, a mapping that does
not validate) is found here, before any record moves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector_core.config import ConfigError, LoadedConfig, load_config, validate_settings
from connector_core.connector import Connector
from connector_core.eventlog import open_event_log
from connector_core.eventlog.base import EventLog
from connector_core.logs import register_secrets_of, register_url_credentials
from connector_core.mapping import MappingError, MappingSet, identity_mapping, load_mapping
from connector_core.plugins import PluginError, PluginHost, load_plugins
from connector_core.state import open_state_store
from connector_core.state.lease import LeasedStateStore

log = logging.getLogger("dcsync.plugins")


@dataclass
class Project:
    config: LoadedConfig
    host: PluginHost
    eventlog: EventLog
    state: LeasedStateStore
    _mappings: dict[str, MappingSet] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path, *, host: PluginHost | None = None, strict: bool = False) -> Project:
        loaded = load_config(path)
        host = host or load_plugins(strict=strict)
        mappings = check_project(loaded, host)  # every config error before a store is opened or created
        project = loaded.project
        eventlog = open_event_log(project.eventlog, loaded.base_dir)
        try:
            state = open_state_store(project.state, loaded.base_dir)
        except BaseException:
            eventlog.close()
            raise
        return cls(config=loaded, host=host, eventlog=eventlog, state=state, _mappings=mappings)

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

    def build_connector(self, name: str) -> Connector:
        cls = self.connector_class(name)
        settings = validate_settings(self.config, name, cls.config_model)
        register_secrets_of(settings)
        return cls(name, settings)  # type: ignore[arg-type]

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
        return load_mapping(path)
    except MappingError as exc:
        # each issue keeps its mapping file, line, column, mapping and field: one line each
        raise ConfigError([str(issue) for issue in exc.issues]) from None


def check_project(loaded: LoadedConfig, host: PluginHost) -> dict[str, MappingSet]:
    """Everything ``run`` refuses in a project file, checked without opening a store: each connector's
    type, settings and mapping. ``schedule list`` and ``Project.open`` share it, so they never disagree.

    Every secret the settings hold is registered for redaction here, so even a command that only reads
    the state store (``runs``, ``dlq show``) masks a secret an older run may have stored.
    """
    project = loaded.project
    register_secrets_of(project.eventlog)  # tokens, passwords and URLs with passwords never reach a log
    register_secrets_of(project.state)
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
            register_secrets_of(validate_settings(loaded, name, cls.config_model))
            mappings[name] = _load_mapping(loaded, name)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return mappings
