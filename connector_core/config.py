"""The project file, ``dcsync.yaml``: where the event log and state live, and which connectors run how.

Operators edit this file by hand, so every mistake is reported with file, line and key, all at once, before
anything runs; ``${VAR}`` (or ``${VAR:-default}``) pulls secrets from the environment so the file itself can
be committed. Relative paths are relative to the file, not to the shell's working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from connector_core.bounded import (
    MAX_YAML_BYTES,
    BoundedInputError,
    compose_yaml,
    decode_utf8,
    read_limited,
)
from connector_core.retry import RetryPolicy
from connector_core.scopes import ScopesConfig

CONFIG_FILE_NAME = "dcsync.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """One or more problems in a project file; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Mark:
    line: int
    column: int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- storage backends -----------------------------------------------------------------------------------
# ``eventlog`` and ``state`` are unions keyed by ``backend`` (``sqlite`` when the key is left out, so existing
# project files keep working). Opened by ``connector_core.eventlog.open_event_log`` and
# ``connector_core.state.open_state_store``; docs/eventlog-backends.md describes every key.


class SqliteEventLogConfig(_Strict):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "events.db"


class PostgresEventLogConfig(_Strict):
    backend: Literal["postgres"]
    url: SecretStr = Field(description="postgresql://user:password@host:port/db, usually ${VAR}")
    db_schema: str = Field(default="dcsync", alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class DataCollectEventLogConfig(_Strict):
    backend: Literal["datacollect"]
    url: str = Field(description="Base URL of the DataCollect backend, e.g. https://sync.example.org")
    config_id: str = Field(description="The tenant (app config id)", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    token: SecretStr | None = None
    email: str | None = None
    password: SecretStr | None = None
    mirror: str = Field(default="datacollect-mirror.db", description="Local SQLite mirror of the log")
    lookback_seconds: float = Field(default=3600.0, ge=0, description="Re-read window for late events")
    refresh_interval: float | None = Field(default=30.0, ge=0, description="Seconds between auto refreshes")
    push_batch: int = Field(default=10, ge=1, le=1000)
    timeout: float = Field(default=30.0, gt=0)
    read: Literal["api", "database"] = "api"
    database_url: SecretStr | None = Field(default=None, description="Read-only URL of DataCollect's DB")
    database_schema: str = Field(default="public", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Retries of DataCollect API calls, as a connector's retry:"
    )

    @model_validator(mode="after")
    def _credentials(self) -> DataCollectEventLogConfig:
        if self.token is None and (self.email is None or self.password is None):
            raise ValueError("set token, or email and password")
        if self.read == "database" and self.database_url is None:
            raise ValueError("read: database needs database_url")
        return self


class _StateEncryption(_Strict):
    """Encryption at rest of the personal data the state store keeps (connector_core/state/sealing.py,
    docs/data-protection.md): the key from the environment (``${DCSYNC_STATE_KEY}``) or a file, never the
    project file itself; ``previous_keys`` still open (never seal) values during a rotation."""

    encryption_key: SecretStr | None = Field(
        default=None, description="32 bytes, URL-safe base64 (`dcsync state keygen`); usually ${VAR}"
    )
    encryption_key_file: str | None = Field(
        default=None, description="A file holding the key (relative to the project file)"
    )
    previous_keys: list[SecretStr] = Field(
        default_factory=list, description="Keys being rotated out: they open, never seal (`state rekey`)"
    )

    @model_validator(mode="after")
    def _keys(self) -> _StateEncryption:
        from connector_core.state.sealing import StateKeyError, decode_key

        if self.encryption_key is not None and self.encryption_key_file is not None:
            raise ValueError("set encryption_key or encryption_key_file, not both")
        if self.previous_keys and self.encryption_key is None and self.encryption_key_file is None:
            raise ValueError("previous_keys needs encryption_key (or encryption_key_file) to seal")
        try:  # the message never quotes a key
            if self.encryption_key is not None:
                decode_key(self.encryption_key.get_secret_value(), "encryption_key")
            for i, key in enumerate(self.previous_keys):
                decode_key(key.get_secret_value(), f"previous_keys[{i}]")
        except StateKeyError as exc:
            raise ValueError(str(exc)) from None
        return self


class SqliteStateConfig(_StateEncryption):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "state.db"


class PostgresStateConfig(_StateEncryption):
    backend: Literal["postgres"]
    url: SecretStr = Field(description="postgresql://user:password@host:port/db, usually ${VAR}")
    db_schema: str = Field(default="dcsync", alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


_BACKEND_TAGS = ("sqlite", "postgres", "datacollect")


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        backend = value.get("backend", "sqlite")
    else:
        backend = getattr(value, "backend", "sqlite")
    return backend if isinstance(backend, str) else repr(backend)


def _backends(message: str) -> Discriminator:
    return Discriminator(_backend_of, custom_error_type="unknown_backend", custom_error_message=message)


EventLogConfig = Annotated[
    Annotated[SqliteEventLogConfig, Tag("sqlite")]
    | Annotated[PostgresEventLogConfig, Tag("postgres")]
    | Annotated[DataCollectEventLogConfig, Tag("datacollect")],
    _backends("unknown backend (expected sqlite, postgres or datacollect)"),
]
StateConfig = Annotated[
    Annotated[SqliteStateConfig, Tag("sqlite")] | Annotated[PostgresStateConfig, Tag("postgres")],
    _backends("unknown backend (expected sqlite or postgres)"),
]


ConflictPolicy = Literal["external-wins", "local-wins", "newest-wins", "merge", "manual"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | float) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 15m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class ScheduleConfig(_Strict):
    """When a connector runs unattended (``dcsync schedule run``)."""

    direction: Literal["push", "pull", "both"] = "both"
    every: str | float | None = Field(default=None, description="Interval: 30s, 15m, 2h, 1d")
    cron: str | None = Field(default=None, description="Crontab expression: minute hour day month weekday")
    timezone: str = Field(default="UTC", description="Time zone of the cron expression")
    jitter: float = Field(default=0, ge=0, description="Random delay of each run, in seconds")
    misfire_grace: float = Field(
        default=300, gt=0, description="A run missed by less than this (seconds) still happens"
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleConfig:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' or 'cron'")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if self.every is not None:
            seconds = parse_duration(self.every)
            if seconds < 1:
                raise ValueError("'every' must be at least 1 second")
            if self.jitter >= seconds:
                raise ValueError("jitter must be shorter than the interval")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone=self.timezone)
            except ValueError as exc:
                raise ValueError(f"bad cron expression {self.cron!r}: {exc}") from None
        return self

    @property
    def interval_seconds(self) -> float | None:
        return parse_duration(self.every) if self.every is not None else None


class WebhookConfig(_Strict):
    """``POST /hooks/{connector}`` of ``dcsync serve`` (docs/realtime.md): a caller proves itself with an
    HMAC-SHA256 of the body under ``secret`` or with the bearer ``token``; both come from ``${VAR}``s."""

    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key (X-Dcsync-Signature)")
    token: SecretStr | None = Field(default=None, description="Accepted as Authorization: Bearer <token>")
    query_token: SecretStr | None = Field(
        default=None,
        description="Accepted as ?token=<value>: for callers that can set no header (Odoo 17's 'Send Webhook "
        "Notification' action); the caller may log its URL",
    )
    max_body: int = Field(default=65_536, ge=0, le=16 * 2**20, description="Largest body accepted, bytes")
    rate: float = Field(default=1.0, gt=0, description="Pulls a caller may start per second, sustained")
    burst: int = Field(default=5, ge=1, description="Pulls a caller may start at once")

    @model_validator(mode="after")
    def _some_credential(self) -> WebhookConfig:
        if self.secret is None and self.token is None and self.query_token is None:
            raise ValueError("set secret, token or query_token")
        for name in ("secret", "token", "query_token"):
            value = getattr(self, name)
            if value is not None and len(value.get_secret_value()) < 16:
                raise ValueError(f"{name} must be at least 16 characters")
        return self


class ServeConfig(_Strict):
    """``dcsync serve``: where it listens and how it turns log changes into runs (docs/realtime.md)."""

    host: str = Field(default="127.0.0.1", description="Address to bind; loopback unless a proxy is in front")
    port: int = Field(default=8470, ge=0, le=65535)
    debounce: float = Field(default=0.1, ge=0, le=60, description="Quiet seconds that end a burst")
    max_delay: float = Field(default=0.5, ge=0, le=600, description="Longest a burst delays its run")
    poll_interval: float = Field(default=0.05, gt=0, le=60, description="SQLite log: seconds between looks")
    remote_poll: float = Field(default=1.0, gt=0, le=3600, description="DataCollect log: shortest poll gap")
    idle_poll_max: float = Field(default=30.0, gt=0, description="DataCollect log: longest idle poll gap")
    busy_retry: float = Field(default=0.5, gt=0, description="Seconds before a busy lease is tried again")
    ui: bool = Field(default=False, description="Also serve the operator console under /ui (docs/console.md)")


class ConnectorInstanceConfig(_Strict):
    type: str = Field(description="Connector type, as `dcsync plugins` lists it")
    enabled: bool = True
    mapping: str | None = Field(
        default=None, description="YAML mapping file; without one, entity data is sent as it is"
    )
    push: bool = True
    pull: bool = True
    batch_size: int = Field(default=100, ge=1, le=10_000)
    page_size: int = Field(default=500, ge=1, le=100_000)
    in_flight: int = Field(
        default=1, ge=1, le=32, description="Batches sent at once (capped by what the connector allows)"
    )
    conflict_policy: ConflictPolicy = Field(
        default="external-wins",
        description="What wins when a record changed on both sides since its last sync",
    )
    merge_fallback: Literal["local", "external"] = Field(
        default="external", description="For conflict_policy merge: the side that wins a field both changed"
    )
    park_limit: int = Field(
        default=5, ge=1, description="Runs a child waits for its parent before it is dead-lettered"
    )
    systemic_after: int = Field(
        default=20,
        ge=0,
        description="Records refused in a row for one reason that stop the run instead of being "
        "dead-lettered (0: never)",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    realtime: bool = Field(
        default=False, description="dcsync serve pushes as soon as the event log changes (docs/realtime.md)"
    )
    webhook: WebhookConfig | None = Field(
        default=None, description="dcsync serve starts a pull on POST /hooks/{connector}"
    )
    schedule: list[ScheduleConfig] = Field(default_factory=list)
    target: str | None = Field(
        default=None, description="The system this connector writes to, a key of `targets:` (its lanes)"
    )
    queue: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Worker fleet: the queue its jobs go to (`dcsync worker --queue`)",
    )
    scopes: ScopesConfig | None = Field(
        default=None,
        description="Fields the push may send and the pull may write back, per entity (absent: any); "
        "docs/data-protection.md#field-scopes",
    )
    settings: dict[str, Any] = Field(default_factory=dict)


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class SchedulerConfig(_Strict):
    """Who fires the schedules: ``embedded`` (``dcsync schedule run``: APScheduler in one process, the
    default) or ``procrastinate`` (the worker fleet of ``dcsync worker``, docs/scale-out.md)."""

    engine: Literal["embedded", "procrastinate"] = "embedded"


class WorkersConfig(_Strict):
    """``dcsync worker`` and ``dcsync queue``: the job queue on PostgreSQL (needs ``dcsync[workers]``)."""

    postgres: SecretStr | None = Field(
        default=None, description="The queue's database; default: the state store's, when it is PostgreSQL"
    )
    db_schema: str = Field(default="dcsync_queue", alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    concurrency: int = Field(default=4, ge=1, le=256, description="Jobs one worker runs at once")
    queues: list[str] = Field(default_factory=list, description="Queues served (empty: all)")
    projects: str | None = Field(default=None, description="Registry file of the projects the fleet serves")
    heartbeat: float = Field(default=10, gt=0, le=600, description="Seconds between a worker's heartbeats")
    stalled_after: float = Field(
        default=60, gt=0, description="Seconds without a heartbeat after which a worker's jobs are retried"
    )
    busy_retry: float = Field(
        default=30, gt=0, description="Seconds before a job that found its connector busy tries again"
    )

    @model_validator(mode="after")
    def _heartbeats_fit(self) -> WorkersConfig:
        if self.stalled_after < 2 * self.heartbeat:
            raise ValueError("stalled_after must be at least twice heartbeat (or a live worker looks dead)")
        return self


class TargetConfig(_Strict):
    """A system several connectors write to (a national registry): how many may write at once."""

    max_writers: int = Field(ge=1, le=1000)


class UiConfig(_Strict):
    """``dcsync ui`` (and ``serve: {ui: true}``): the operator console (docs/console.md). A login is a name
    and a password from ``users`` (values read from ``${VAR}``s when the console starts, not by every
    command) or the token in ``DCSYNC_UI_TOKEN``."""

    host: str = Field(
        default="127.0.0.1", description="Address to bind; any other than loopback needs a login"
    )
    port: int = Field(default=8471, ge=0, le=65535)
    users: dict[Annotated[str, Field(pattern=_NAME)], str] = Field(
        default_factory=dict, description="Login name -> password, usually ${VAR}"
    )
    session_hours: float = Field(default=12, gt=0, le=24 * 30, description="How long a login lasts")


RetentionPeriod = Annotated[
    str | float | None,
    Field(description="How long to keep it: 90d, 12h, 30m (a bare number is seconds); absent: forever"),
]


class RetentionConfig(_Strict):
    """How long dcsync keeps what it no longer needs (``dcsync purge``; ``schedule run`` and ``serve``
    purge daily). Absent keys keep their rows forever. Open work is never purged: open dead letters, open
    conflicts, runs in progress, links of live entities, parked children."""

    dead_letters: RetentionPeriod = None
    runs: RetentionPeriod = None
    conflicts: RetentionPeriod = None
    deleted_snapshots: RetentionPeriod = None
    audit: RetentionPeriod = None

    @field_validator("*")
    @classmethod
    def _positive(cls, value: str | float | None) -> str | float | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("a retention period must be longer than zero")
        return value

    def periods(self) -> dict[str, float]:
        """Seconds to keep each kind of row that has a period."""
        return {
            key: parse_duration(value)
            for key in type(self).model_fields
            if (value := getattr(self, key)) is not None
        }


class ProjectConfig(_Strict):
    version: Literal[1] = 1
    serve: ServeConfig = Field(default_factory=ServeConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    eventlog: EventLogConfig = Field(default_factory=SqliteEventLogConfig)
    state: StateConfig = Field(default_factory=SqliteStateConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    targets: dict[Annotated[str, Field(pattern=_NAME)], TargetConfig] = Field(default_factory=dict)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    connectors: dict[str, ConnectorInstanceConfig] = Field(default_factory=dict)


@dataclass
class LoadedConfig:
    """A validated project file with what is needed to point later errors at their line."""

    project: ProjectConfig
    path: Path
    marks: dict[tuple[str | int, ...], Mark]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve_path(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate)

    def where(self, *loc: str | int) -> str:
        """``file:line:col`` of the deepest known node on ``loc``."""
        for cut in range(len(loc), -1, -1):
            mark = self.marks.get(tuple(loc[:cut]))
            if mark is not None:
                return f"{self.path}:{mark.line}:{mark.column}"
        return str(self.path)

    def error(self, loc: tuple[str | int, ...], message: str) -> ConfigError:
        key = ".".join(str(p) for p in loc)
        return ConfigError([f"{self.where(*loc)}: {key}: {message}"])


def _interpolate(text: str, where: str, problems: list[str], key: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is not None:
                return default
            problems.append(f"{where}: {key}: environment variable {name} is not set")
            return ""
        return value

    if _malformed(text, where, problems, key):
        return text
    return _VAR.sub(replace, text)


def _malformed(text: str, where: str, problems: list[str], key: str) -> bool:
    if text.count("${") > len(_VAR.findall(text)):
        problems.append(
            f"{where}: {key}: malformed ${{...}} reference (expected ${{NAME}} or ${{NAME:-default}})"
        )
        return True
    return False


def _deferred(path: tuple[str | int, ...]) -> bool:
    """A connector's ``settings`` hold its secrets; their ``${VAR}``s are read only when that connector is
    built (``resolve_settings``), so a command that never contacts it (status, runs, dlq, log, a dry run's
    push plan) needs none of them."""
    return (len(path) >= 3 and path[0] == "connectors" and path[2] == "settings") or (
        len(path) >= 3 and path[:2] == ("ui", "users")  # the console's passwords: read when it starts
    )


def _to_python(
    node: yaml.Node,
    path: tuple[str | int, ...],
    marks: dict[tuple[str | int, ...], Mark],
    source: Path,
    problems: list[str],
) -> Any:
    marks[path] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
    where = f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    key = ".".join(str(p) for p in path) or "(top)"
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            name = key_node.value
            if name in out:
                line = key_node.start_mark.line + 1
                problems.append(f"{source}:{line}:{key_node.start_mark.column + 1}: duplicate key {name!r}")
            out[name] = _to_python(value_node, (*path, name), marks, source, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), marks, source, problems) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader("").construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        if _deferred(path):
            _malformed(value, where, problems, key)  # a typo is bad input whatever the command
        else:
            value = _interpolate(value, where, problems, key)
    return value


def parse_yaml_with_marks(
    text: str, source: Path
) -> tuple[Any, dict[tuple[str | int, ...], Mark], list[str]]:
    """YAML to Python plus the line/column of every node, with ``${VAR}`` interpolated in strings (those
    of connector settings are left for :func:`resolve_settings`)."""
    problems: list[str] = []
    marks: dict[tuple[str | int, ...], Mark] = {}
    try:
        node = compose_yaml(text, str(source))
    except BoundedInputError as exc:
        raise ConfigError([str(exc)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{place}: invalid YAML: {reason}"]) from None
    if node is None:
        return {}, marks, problems
    return _to_python(node, (), marks, source, problems), marks, problems


def _without_union_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Pydantic puts the chosen backend in an error's location (``eventlog.postgres.url``); the file has no
    such key, so take it out before the location is matched to a line."""
    if len(loc) >= 2 and loc[0] in ("eventlog", "state") and loc[1] in _BACKEND_TAGS:
        return (loc[0], *loc[2:])
    return loc


def _pydantic_problems(
    exc: ValidationError, marks: dict[tuple[str | int, ...], Mark], source: Path, prefix: tuple = ()
) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = _without_union_tags(tuple(prefix) + tuple(err["loc"]))
        where = str(source)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in marks:
                mark = marks[loc[:cut]]
                where = f"{source}:{mark.line}:{mark.column}"
                break
        key = ".".join(str(p) for p in loc) or "(top)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "is required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(f"{where}: {key}: {msg}")
    return problems


def load_config(path: str | Path) -> LoadedConfig:
    source = Path(path)
    try:
        text = decode_utf8(read_limited(source, MAX_YAML_BYTES, "project file"), str(source))
    except BoundedInputError as exc:
        raise ConfigError([str(exc)]) from None
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file (create one with `dcsync init`)"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror}"]) from None
    data, marks, problems = parse_yaml_with_marks(text, source)
    if not isinstance(data, dict):
        problems.append(f"{source}:1:1: the project file must be a mapping of keys")
        raise ConfigError(problems)
    try:
        project = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, marks, source))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    loaded = LoadedConfig(project=project, path=source.resolve(), marks=marks)
    problems = _cross_checks(loaded)
    if problems:
        raise ConfigError(problems)
    return loaded


def _cross_checks(loaded: LoadedConfig) -> list[str]:
    """What one key cannot check alone: a connector's ``target`` names a configured target; with the
    procrastinate engine, every schedule is one a periodic task can fire (workers/periodic.py)."""
    problems: list[str] = []
    project = loaded.project
    for name, instance in project.connectors.items():
        if instance.target is not None and instance.target not in project.targets:
            known = ", ".join(project.targets) or "none"
            problems.append(
                f"{loaded.where('connectors', name, 'target')}: connectors.{name}.target: "
                f"no target named {instance.target!r} under targets: (configured: {known})"
            )
    if project.scheduler.engine == "procrastinate":
        from connector_core.workers.periodic import PeriodicError, cron_of

        for name, instance in project.connectors.items():
            for index, schedule in enumerate(instance.schedule):
                try:
                    cron_of(schedule)
                except PeriodicError as exc:
                    loc = ("connectors", name, "schedule", index)
                    problems.append(f"{loaded.where(*loc)}: connectors.{name}.schedule.{index}: {exc}")
    return problems


def resolve_settings(loaded: LoadedConfig, name: str) -> dict[str, Any]:
    """One connector's ``settings`` with their ``${VAR}``s read from the environment now.

    Raises :class:`ConfigError` naming file:line:column of every variable that is not set.
    """
    problems: list[str] = []

    def resolve(value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return _interpolate(value, loaded.where(*path), problems, ".".join(str(p) for p in path))
        return value

    resolved = resolve(loaded.project.connectors[name].settings, ("connectors", name, "settings"))
    if problems:
        raise ConfigError(problems)
    return resolved  # type: ignore[no-any-return]


def resolve_ui_users(loaded: LoadedConfig) -> dict[str, str]:
    """The console's logins with their passwords read from the environment now (``ConfigError`` naming
    file:line:column of every variable that is not set)."""
    problems: list[str] = []
    users = {
        name: _interpolate(value, loaded.where("ui", "users", name), problems, f"ui.users.{name}")
        for name, value in loaded.project.ui.users.items()
    }
    if problems:
        raise ConfigError(problems)
    return users


def validate_settings(loaded: LoadedConfig, name: str, model: type[BaseModel]) -> BaseModel:
    """Validate one connector's ``settings`` against its type's config model, with line numbers."""
    raw = resolve_settings(loaded, name)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            _pydantic_problems(exc, loaded.marks, loaded.path, ("connectors", name, "settings"))
        ) from None


EXAMPLE_CONFIG = """\
# dcsync project file. Paths are relative to this file; ${VAR} and ${VAR:-default} read the environment,
# so secrets stay out of the file. `dcsync run NAME` runs one connector; `dcsync plugins` lists the types.
version: 1

# Where the DataCollect event log lives (the embedded default is a SQLite file).
eventlog:
  backend: sqlite
  path: events.db

# Where dcsync keeps checkpoints, links (entity guid <-> external id), dead letters and run history.
state:
  backend: sqlite
  path: state.db

connectors:
  # A name of your choice -> one connector instance.
  registry:
    type: mock                 # connector type, see `dcsync plugins`
    enabled: true
    push: true                 # send entity changes from the log
    pull: true                 # append remote changes to the log as events
    batch_size: 100            # records per request
    page_size: 500             # events read from the log (or records from the remote) per page
    # mapping: mappings/datacollect-registrant.yaml   # without one, entity data is sent as it is
    settings:
      url: ${MOCK_URL:-http://127.0.0.1:8765}
      timeout: 10
"""
