"""The plugin host: one pluggy manager, loaded from the ``dcsync.connectors`` entry points.

pluggy's own ``load_setuptools_entrypoints`` stops at the first broken plugin; an operator's scheduled sync
must not die because some unrelated plugin fails to import, so each entry point is loaded on its own, and a
failure is recorded with the plugin's name and error and skipped (``strict=True`` makes it fatal instead).

Two switches help plugin authors: ``DCSYNC_TRACE_HOOKS=1`` logs every hook call with its arguments and
results, and ``DCSYNC_PLUGINS=name,name`` restricts which entry points load.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from connector_core import hookspecs
from connector_core.connector import Capability, Connector

ENTRY_POINT_GROUP = "dcsync.connectors"
log = logging.getLogger("dcsync.plugins")


class PluginError(Exception):
    """A plugin could not be loaded or breaks the hook contract (fatal only in strict mode)."""


@dataclass(frozen=True, slots=True)
class PluginFailure:
    name: str
    package: str | None
    error: str

    def __str__(self) -> str:
        where = f" ({self.package})" if self.package else ""
        return f"plugin {self.name!r}{where} skipped: {self.error}"


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    type_name: str
    cls: type[Connector]
    plugin: str
    package: str | None
    version: str | None

    @property
    def capabilities(self) -> list[str]:
        return sorted(str(c) for c in self.cls.capabilities)


@dataclass
class PluginHost:
    """Loaded plugins: the connector types by name, the transforms, and what failed to load."""

    pm: pluggy.PluginManager
    connectors: dict[str, ConnectorInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def connector_class(self, type_name: str) -> type[Connector]:
        try:
            return self.connectors[type_name].cls
        except KeyError:
            known = ", ".join(sorted(self.connectors)) or "none"
            raise PluginError(
                f"no connector of type {type_name!r} is installed (installed: {known})"
            ) from None

    def fake_servers(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for batch in self.pm.hook.dcsync_fake_servers():
            found.update(batch or {})
        return found

    def fake_server(self, name: str) -> Any:
        servers = self.fake_servers()
        if name not in servers:
            known = ", ".join(sorted(servers)) or "none"
            raise PluginError(f"no fake server named {name!r} is installed (installed: {known})")
        return servers[name]

    def transforms(self) -> list[Any]:
        found: list[Any] = []
        for batch in self.pm.hook.dcsync_transforms():
            found.extend(batch or [])
        return found

    def install_transforms(self) -> list[str]:
        """Register the plugins' transforms with the mapping engine, so every mapping (a run's, and
        ``dcsync mapping validate|test``'s) can use them; one line per definition that was skipped, for
        the caller to report where its user looks."""
        from connector_core.mapping import register_transforms

        defs = self.transforms()
        return register_transforms(defs) if defs else []


def _dist_of(ep: md.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _check_plugin(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Reject hook implementations that are not in the contract (misspelled or wrong signature)."""
    for hook_name in dir(plugin):
        if not hook_name.startswith("dcsync_"):
            continue
        hook = getattr(pm.hook, hook_name, None)
        if hook is None or not hook.has_spec():
            raise PluginError(f"implements unknown hook {hook_name!r}")


def _validate_connector(cls: Any) -> None:
    if not isinstance(cls, type) or not issubclass(cls, Connector):
        raise PluginError(f"{cls!r} is not a Connector subclass")
    if not getattr(cls, "type_name", None):
        raise PluginError(f"{cls.__name__} has no type_name")
    unknown = set(cls.capabilities) - set(Capability)
    if unknown:
        raise PluginError(f"{cls.__name__} declares unknown capabilities {sorted(unknown)}")
    if cls.__abstractmethods__:
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise PluginError(f"{cls.__name__} does not implement {missing}")


def load_plugins(
    *,
    strict: bool = False,
    extra_plugins: Iterable[tuple[str, object]] = (),
    entry_points: Iterable[md.EntryPoint] | None = None,
) -> PluginHost:
    """Build the plugin host from entry points (and ``extra_plugins`` given in code, e.g. by tests)."""
    pm = pluggy.PluginManager("dcsync")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("DCSYNC_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda msg: log.info("hook: %s", msg.rstrip()))
        pm.enable_tracing()
    host = PluginHost(pm=pm)
    only = {n.strip() for n in os.environ.get("DCSYNC_PLUGINS", "").split(",") if n.strip()}

    candidates: list[tuple[str, str | None, str | None, Any]] = []
    eps = md.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
    seen_names: set[str] = set()
    for ep in sorted(eps, key=lambda e: e.name):
        if ep.name in seen_names or (only and ep.name not in only):
            continue
        seen_names.add(ep.name)
        package, version = _dist_of(ep)
        try:
            plugin = ep.load()
        except Exception as exc:  # a plugin's import error must not take the host down
            _fail(host, strict, PluginFailure(ep.name, package, f"{type(exc).__name__}: {exc}"))
            continue
        candidates.append((ep.name, package, version, plugin))
    for name, plugin in extra_plugins:
        candidates.append((name, None, None, plugin))

    for name, package, version, plugin in candidates:
        try:
            _check_plugin(pm, plugin, name)
            pm.register(plugin, name=name)
            impl = getattr(plugin, "dcsync_connectors", None)
            classes = list(impl() or []) if impl is not None else []
            infos = []
            for cls in classes:
                _validate_connector(cls)
                if cls.type_name in host.connectors:
                    other = host.connectors[cls.type_name].plugin
                    raise PluginError(
                        f"connector type {cls.type_name!r} is already provided by plugin {other!r}"
                    )
                infos.append(ConnectorInfo(cls.type_name, cls, name, package, version))
        except Exception as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            _fail(host, strict, PluginFailure(name, package, f"{type(exc).__name__}: {exc}"))
            continue
        for info in infos:
            host.connectors[info.type_name] = info
    return host


def _fail(host: PluginHost, strict: bool, failure: PluginFailure) -> None:
    if strict:
        raise PluginError(str(failure))
    log.warning("%s", failure)
    host.failures.append(failure)
