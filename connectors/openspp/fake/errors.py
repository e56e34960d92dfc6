"""Exceptions the fake raises on purpose, carrying the class path Odoo puts in ``error.data.name``.

Odoo serialises any exception into the JSON-RPC error envelope with ``data.name = "<module>.<Class>"``;
clients (ours included) classify failures by that name. The fake therefore names every deliberate failure
with the exact path a real Odoo 17 + OpenG2P server reports (``odoo-observed.md`` §3.3), and an accidental
exception inside the fake still surfaces as ``builtins.<Class>``, just as a bug inside Odoo would.
"""

from __future__ import annotations

USER_ERROR = "odoo.exceptions.UserError"
VALIDATION_ERROR = "odoo.exceptions.ValidationError"
ACCESS_ERROR = "odoo.exceptions.AccessError"
ACCESS_DENIED = "odoo.exceptions.AccessDenied"
MISSING_ERROR = "odoo.exceptions.MissingError"
SESSION_EXPIRED = "odoo.http.SessionExpiredException"
VALUE_ERROR = "builtins.ValueError"
TYPE_ERROR = "builtins.TypeError"
KEY_ERROR = "builtins.KeyError"
INDEX_ERROR = "builtins.IndexError"
ATTRIBUTE_ERROR = "builtins.AttributeError"
SERIALIZATION_FAILURE = "psycopg2.errors.SerializationFailure"
LOCK_NOT_AVAILABLE = "psycopg2.errors.LockNotAvailable"
DEADLOCK_DETECTED = "psycopg2.errors.DeadlockDetected"
OPERATIONAL_ERROR = "psycopg2.OperationalError"
POOL_ERROR = "psycopg2.pool.PoolError"
INVALID_TEXT_REPRESENTATION = "psycopg2.errors.InvalidTextRepresentation"
INVALID_DATETIME_FORMAT = "psycopg2.errors.InvalidDatetimeFormat"

# Exceptions that subclass odoo.exceptions.UserError: ``load()`` reports these as plain messages.
USER_ERROR_FAMILY = frozenset({USER_ERROR, VALIDATION_ERROR, ACCESS_ERROR, MISSING_ERROR})


class RpcError(Exception):
    """A failure reported to the caller as Odoo would report it.

    ``load_message`` is what ``Model.load`` puts in its ``messages`` for the same failure when it differs
    from ``message`` (Odoo's import catches the raw database error there, before the RPC layer rewrites
    it into "The operation cannot be completed: ...").
    """

    def __init__(
        self,
        name: str,
        message: str,
        *,
        code: int = 200,
        http_message: str = "Odoo Server Error",
        load_message: str | None = None,
    ):
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code
        self.http_message = http_message
        self.load_message = load_message


def user_error(message: str) -> RpcError:
    return RpcError(USER_ERROR, message)


def validation_error(message: str, *, load_message: str | None = None) -> RpcError:
    return RpcError(VALIDATION_ERROR, message, load_message=load_message)


def value_error(message: str) -> RpcError:
    return RpcError(VALUE_ERROR, message)


def missing_error(model: str, ids: list[int], uid: int) -> RpcError:
    inner = ", ".join(str(i) for i in ids)
    if len(ids) == 1:
        inner += ","
    return RpcError(
        MISSING_ERROR,
        f"Record does not exist or has been deleted.\n(Record: {model}({inner}), User: {uid})",
    )


def access_denied() -> RpcError:
    return RpcError(ACCESS_DENIED, "Access Denied")


def session_expired() -> RpcError:
    return RpcError(SESSION_EXPIRED, "Session expired", code=100, http_message="Odoo Session Expired")


def not_null_error(model_label: str, model: str, field_label: str, field: str) -> RpcError:
    return validation_error(
        "The operation cannot be completed:\n"
        "- Create/update: a mandatory field is not set.\n"
        "- Delete: another model requires the record being deleted. If possible, archive it instead.\n\n"
        f"Model: {model_label} ({model})\nField: {field_label} ({field})\n",
        load_message=f"Missing required value for the field '{field_label}' ({field})",
    )


def foreign_key_error(model_label: str, model: str, constraint: str) -> RpcError:
    return validation_error(
        "The operation cannot be completed: another model requires the record being deleted. "
        "If possible, archive it instead.\n\n"
        f"Model: {model_label} ({model})\nConstraint: {constraint}\n"
    )


def sql_constraint_error(message: str) -> RpcError:
    """A named SQL constraint, as ``odoo.service.model._as_validation_error`` words it."""
    return validation_error(f"The operation cannot be completed: {message}", load_message=message)
