"""The one redaction boundary: what dcsync writes or shows never holds a secret.

Secrets reach text in more shapes than the one configured: a remote that echoes the request puts the password
in a JSON body, the API key in a header dump, a URL's ``user:password`` as ``Basic <base64>``, and a query
string URL-encodes it. So each registered secret is masked in its plain, JSON-escaped, URL-encoded and base64
forms (the last also inside a longer base64 blob such as ``user:password``), and a few shapes are masked
whatever their value: credentials in a URL, ``Basic``/``Bearer`` header values, and the values under keys
such as ``password``, ``api_key``, ``token`` or ``authorization`` in an echoed body.

Logs (``connector_core.logs``), the CLI's output and everything the state store persists (dead-letter
reasons and payloads, run errors, parked reasons, conflicts) pass through :func:`redact` or
:func:`redact_value`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "***"
_MIN_SECRET = 4  # masking 1-3 characters would garble ordinary text
_MIN_BASE64_CORE = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()
_pattern: re.Pattern[str] | None = None

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/:@'\"]*):(?P<pw>[^\s/@'\"]+)@"
)
_AUTH_SCHEMES = re.compile(
    r"\b(?P<scheme>Basic|Bearer)(?P<sep>\s+)"
    r"(?P<value>[A-Za-z0-9+/=._~-]{8,})"
)
_SECRET_KEYS = (
    r"password|passwd|pwd|passphrase|secret|client_secret|api[_-]?key|x-api-key|apikey|access[_-]?token"
    r"|refresh[_-]?token|id[_-]?token|token|authorization|proxy-authorization|cookie|set-cookie|session[_-]?id"
)
_KEY_VALUES = re.compile(
    r"(?P<key>(?P<q>[\"']?)\b(?:" + _SECRET_KEYS + r")(?P=q)\s*(?::|=|=>)\s*)"
    r"(?P<value>(?:Basic|Bearer|Token)\s+[^\s,;\"']+|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,;&}\])\"']+)",
    re.IGNORECASE,
)


def _forms(secret: str) -> set[str]:
    """Every shape in which ``secret`` may be echoed back."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms.add(json.dumps(json.dumps(secret)[1:-1])[1:-1])  # a JSON body quoted inside a JSON error
    raw = secret.encode()
    for k in range(3):  # the secret at each alignment inside a longer base64 text (e.g. user:password)
        encoded = base64.b64encode(b"\0" * k + raw).decode()
        start = -(-8 * k // 6)
        end = (8 * (k + len(raw))) // 6
        core = encoded[start:end]
        if len(core) >= _MIN_BASE64_CORE:
            forms.add(core)
            forms.add(core.replace("+", "-").replace("/", "_"))
    forms.add(base64.b64encode(raw).decode())
    return {f for f in forms if len(f) >= _MIN_SECRET}


def register_secret(value: str) -> None:
    """Mask ``value`` (and its encoded forms) in everything dcsync writes or shows from now on."""
    global _pattern, _ordered
    if not value or len(value) < _MIN_SECRET:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        known = set(_ordered)
        known.update(_forms(value))
        _ordered = tuple(sorted(known, key=len, reverse=True))
        _pattern = re.compile("|".join(re.escape(s) for s in _ordered))


def register_secrets_of(model: BaseModel) -> None:
    """Remember every ``SecretStr`` field of a (possibly nested) settings model, and the password of every
    URL with credentials among its plain strings."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr | SecretBytes):
            secret = value.get_secret_value()
            text = secret.decode() if isinstance(secret, bytes) else secret
            register_secret(text)
            register_url_credentials(text)
        elif isinstance(value, BaseModel):
            register_secrets_of(value)
        else:
            register_url_credentials(value)


def register_url_credentials(value: Any) -> None:
    """Find ``scheme://user:password@host`` in ``value`` (strings, lists, dicts, any depth) and register the
    password and the ``user:password`` pair (which travels as ``Basic <base64>``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "@" in item and "://" in item:
                for match in _URL_CREDENTIALS.finditer(item):
                    _register_userinfo(match.group("user"), match.group("pw"))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, SecretStr):
            register_secret(item.get_secret_value())
            stack.append(item.get_secret_value())
        elif isinstance(item, BaseModel):  # e.g. a list of auth models
            register_secrets_of(item)


def _register_userinfo(user: str, password: str) -> None:
    for pw in {password, unquote(password)}:
        register_secret(pw)
        register_secret(f"{unquote(user)}:{pw}")
    try:  # httpx sends exactly this header for such a URL
        split = urlsplit(f"http://{user}:{password}@h")
        if split.password:
            register_secret(f"{split.username or ''}:{split.password}")
    except ValueError:
        pass


def _key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value in (MASK, f'"{MASK}"', f"'{MASK}'") or value.lower() in ("null", "none", '""', "''"):
        return match.group(0)
    quote_char = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{quote_char}{MASK}{quote_char}"


def _auth_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.isalpha() and value[1:] == value[1:].lower():
        return match.group(0)  # a word ("Basic information"), not a credential
    return f"{match.group('scheme')}{match.group('sep')}{MASK}"


def redact_known(text: str) -> str:
    """``text`` with every registered secret (in any of its forms) and URL credentials masked: for data
    (payloads, conflicts) where a field merely *named* ``token`` is an ordinary value."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
        text = _cut_prefix(text)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    return text


_ELLIPSES = ("...", "\u2026")
_MIN_PREFIX = 3


def _cut_prefix(text: str) -> str:
    """A message cut to a few hundred characters may end inside a secret (``... "args": ["db", "Zq7!``);
    the part that is left is masked too."""
    body, tail = text, ""
    for ellipsis in _ELLIPSES:
        if body.endswith(ellipsis):
            body, tail = body[: -len(ellipsis)], ellipsis
            break
    for form in _ordered:
        # k < len(body): a value that is nothing but the start of a secret (a connector ``reg`` beside the
        # password ``registrar``) is not a message cut inside one, which always has text before the cut
        for k in range(min(len(form), len(body)) - 1, _MIN_PREFIX - 1, -1):
            if body.endswith(form[:k]):
                return body[:-k] + MASK + tail
    return text


def redact(text: str) -> str:
    """``text`` (a message, an error, a remote's answer) with every registered secret and every
    credential-shaped value (``Basic ...``, ``"password": ...``) replaced by ``***``."""
    if not text:
        return text
    text = redact_known(text)
    text = _AUTH_SCHEMES.sub(_auth_value, text)
    return _KEY_VALUES.sub(_key_value, text)


def redact_value(value: Any, *, full: bool = False) -> Any:
    """A copy of a JSON-like value (a dead letter's payload, a conflict's versions) with every string,
    keys included, passed through :func:`redact_known` (or :func:`redact` with ``full``, for text shown to
    a person); the structure is kept, so the result is still valid JSON."""
    clean = redact if full else redact_known
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {(clean(k) if isinstance(k, str) else k): redact_value(v, full=full) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, full=full) for v in value]
    return value


def registered() -> Iterable[str]:
    """The secrets registered so far (tests check that each is absent from what dcsync wrote)."""
    with _lock:
        return tuple(_secrets)


def forget_all() -> None:
    """Drop every registered secret: for tests, which must prove each command registers what it needs
    instead of profiting from an earlier test in the same process."""
    global _pattern, _ordered
    with _lock:
        _secrets.clear()
        _ordered = ()
        _pattern = None
