"""The whole plugin contract: one function per hook; each docstring is that hook's documentation.

Built-in connectors register through these very hooks and the same ``dcsync.connectors`` entry points as a
third party's, so the contract is exercised by the core itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from connector_core.connector import Connector

hookspec = pluggy.HookspecMarker("dcsync")
hookimpl = pluggy.HookimplMarker("dcsync")


@hookspec
def dcsync_connectors() -> list[type[Connector]]:  # type: ignore[empty-body]
    """Return the connector classes this plugin provides.

    Each class subclasses :class:`connector_core.connector.Connector` and sets ``type_name`` (the value of
    ``type:`` in ``dcsync.yaml``), ``config_model`` and ``capabilities``. Two plugins offering the same
    ``type_name`` is an error reported at load time.
    """


@hookspec
def dcsync_transforms() -> list[Any]:  # type: ignore[empty-body]
    """Return mapping transforms this plugin provides (see ``connector_core.mapping``).

    Each item is a transform definition the mapping engine registers under its name; it declares whether it
    is reversible so the validator can reject it inside a reversible field.
    """


@hookspec
def dcsync_fake_servers() -> dict[str, Any]:  # type: ignore[empty-body]
    """Return fake remote systems this plugin ships, as ``{name: factory}``.

    ``factory(data_file: pathlib.Path | None)`` returns an ASGI app that speaks the remote's real protocol
    (never more leniently than the real system). ``dcsync mock-server NAME`` serves it, and the demo and
    the contract tests aim connectors at it. ``data_file``, when given, keeps its records across restarts.
    """
