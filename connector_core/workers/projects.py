"""Which projects a fleet serves, and opening them in a worker.

A job names its project by a **registered name** (a registry file: ``workers: {projects: FILE}`` in
``dcsync.yaml``, ``--projects FILE`` or ``DCSYNC_PROJECTS=FILE``) or by the **path** of its ``dcsync.yaml``.
Names are what a fleet of many machines should use: the lock keys and job arguments then do not depend on
where each machine keeps its files. The registry file::

    projects:
      tenant-a: tenants/a/dcsync.yaml     # relative to this file
      tenant-b: /srv/dcsync/b/dcsync.yaml

A worker keeps the projects it opened (plugins loaded, mappings compiled, stores connected) and lends each
to one job at a time, so jobs of one project never share a store connection across threads, and a busy
project costs one opening per concurrent job rather than one per job. A project whose ``dcsync.yaml``
changed is opened afresh.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from connector_core.bounded import MAX_YAML_BYTES, BoundedInputError, decode_utf8, read_limited
from connector_core.config import ConfigError, _pydantic_problems, parse_yaml_with_marks
from connector_core.state.lease import ConnectorBusy

if TYPE_CHECKING:  # pragma: no cover
    from connector_core.plugins import PluginHost
    from connector_core.project import Project

ENV_VAR = "DCSYNC_PROJECTS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    projects: dict[str, str]


@dataclass(frozen=True)
class ProjectRef:
    """A project as jobs name it (``key``: its registered name, or its file's absolute path) and its file."""

    key: str
    path: Path


@dataclass(frozen=True)
class ProjectRegistry:
    names: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def load(cls, path: str | Path | None) -> ProjectRegistry:
        """The registry in ``path``, else in ``$DCSYNC_PROJECTS``, else an empty one (paths only)."""
        chosen = path if path is not None else os.environ.get(ENV_VAR) or None
        return cls() if chosen is None else _read_registry(Path(chosen))

    def resolve(self, ref: str) -> ProjectRef:
        """A job's ``project`` argument to its file; raises ``ConfigError`` (one line) when unknown."""
        if ref in self.names:
            return ProjectRef(ref, self.names[ref])
        path = Path(ref).expanduser()
        if path.is_dir():
            path = path / "dcsync.yaml"
        if path.is_file():
            resolved = path.resolve()
            for name, registered in self.names.items():  # one project, one key, whichever way it is named
                if registered == resolved:
                    return ProjectRef(name, resolved)
            return ProjectRef(str(resolved), resolved)
        known = ", ".join(sorted(self.names)) or "none"
        where = f" in {self.source}" if self.source else ""
        raise ConfigError([f"project {ref!r}: no such registered name{where} (registered: {known}) nor file"])


def _read_registry(source: Path) -> ProjectRegistry:
    try:
        text = decode_utf8(read_limited(source, MAX_YAML_BYTES, "project registry"), str(source))
    except BoundedInputError as exc:
        raise ConfigError([str(exc)]) from None
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such project registry file"]) from None
    data, marks, problems = parse_yaml_with_marks(text, source)
    if problems:
        raise ConfigError(problems)
    try:
        parsed = _RegistryFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, marks, source)) from None
    names: dict[str, Path] = {}
    for name, value in parsed.projects.items():
        mark = marks.get(("projects", name))
        where = f"{source}:{mark.line}:{mark.column}" if mark else str(source)
        if not _NAME.match(name):
            problems.append(f"{where}: projects.{name}: a name is letters, digits, '_', '.', '-'")
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else source.parent / path
        if path.is_dir():
            path = path / "dcsync.yaml"
        if not path.is_file():
            problems.append(f"{where}: projects.{name}: {path} does not exist")
            continue
        names[name] = path.resolve()
    if problems:
        raise ConfigError(problems)
    return ProjectRegistry(names, source.resolve())


@dataclass
class _Idle:
    mtime: float
    projects: list[Project] = field(default_factory=list)


class ProjectCache:
    """Opened projects, lent to one job at a time (see the module's docstring)."""

    def __init__(self, registry: ProjectRegistry | None = None, max_idle: int = 8):
        self.registry = registry or ProjectRegistry()
        self.max_idle = max_idle
        self._idle: dict[Path, _Idle] = {}
        self._lock = threading.Lock()
        self._host: PluginHost | None = None

    def _plugins(self) -> PluginHost:
        from connector_core.plugins import load_plugins

        with self._lock:
            if self._host is None:
                self._host = load_plugins()
            return self._host

    @contextmanager
    def borrow(self, ref: str) -> Iterator[tuple[ProjectRef, Project]]:
        from connector_core.project import Project

        target = self.registry.resolve(ref)
        mtime = target.path.stat().st_mtime
        project = None
        stale: list[Project] = []
        with self._lock:
            idle = self._idle.get(target.path)
            if idle is not None and idle.mtime != mtime:
                stale, idle.projects, idle.mtime = idle.projects, [], mtime
            if idle is not None and idle.projects:
                project = idle.projects.pop()
        for old in stale:
            old.close()
        if project is None:
            project = Project.open(target.path, host=self._plugins())
        try:
            yield target, project
        except ConnectorBusy:
            self._give_back(target, mtime, project)  # refused before it wrote anything: still sound
            raise
        except BaseException:
            project.close()  # a store left mid-transaction or disconnected is not lent again
            raise
        self._give_back(target, mtime, project)

    def _give_back(self, target: ProjectRef, mtime: float, project: Project) -> None:
        with self._lock:
            idle = self._idle.setdefault(target.path, _Idle(mtime))
            keep = idle.mtime == mtime and len(idle.projects) < self.max_idle
            if keep:
                idle.projects.append(project)
        if not keep:
            project.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for entry in idle.values():
            for project in entry.projects:
                project.close()


_cache = ProjectCache()


def use_registry(registry: ProjectRegistry) -> None:
    """Make ``registry`` the one this process's jobs resolve projects with (the worker does, at start)."""
    global _cache
    _cache.close()
    _cache = ProjectCache(registry)


@contextmanager
def open_project(ref: str) -> Iterator[Project]:
    """The project a job names (registered name or path), lent from this process's cache for the ``with``."""
    with _cache.borrow(ref) as (_target, project):
        yield project


def project_key(ref: str) -> str:
    """The name jobs and locks use for ``ref``: its registered name, else its file's absolute path."""
    return _cache.registry.resolve(ref).key
