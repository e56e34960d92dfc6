"""The redaction boundary on its own: each shape a secret takes when a remote echoes it, and the store
wrapper that applies it to everything persisted."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from pydantic import BaseModel, SecretStr

from connector_core import codec
from connector_core.config import SqliteStateConfig
from connector_core.redaction import (
    MASK,
    forget_all,
    redact,
    redact_known,
    redact_value,
    register_secret,
    register_secrets_of,
    register_url_credentials,
)
from connector_core.state import Direction, open_state_store

SECRET = "p@ss:w0rd/Zx!9"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    forget_all()
    yield
    forget_all()


def test_every_encoded_form_of_a_registered_secret_is_masked() -> None:
    register_secret(SECRET)
    raw = SECRET.encode()
    for form in (
        SECRET,
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        base64.b64encode(raw).decode(),
        json.dumps(json.dumps({"pw": SECRET})),
    ):
        assert SECRET not in redact(f"before {form} after")
        assert form not in redact(f"before {form} after"), form
    # inside a longer base64 text at any alignment, as in ``Basic base64(user:secret)``
    for user in ("a", "ab", "abc"):
        blob = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
        redacted = redact(blob)
        assert MASK in redacted
        left = base64.b64decode(redacted.replace(MASK, "") + "==", validate=False)
        assert raw not in left and raw[2:-2] not in left


def test_a_message_cut_inside_a_secret_masks_what_is_left() -> None:
    register_secret(SECRET)
    assert redact(f'args: ["db", "{SECRET[:6]}') == f'args: ["db", "{MASK}'
    assert redact(f"x {SECRET[:5]}...") == f"x {MASK}..."


def test_a_whole_value_that_only_begins_like_a_secret_is_not_a_cut_message() -> None:
    """A connector named ``reg`` with the password ``registrar`` registered: the audit trail's detail
    lists the connector, and must show its name (a cut message always has text before what is left)."""
    register_secret("registrar")
    assert redact_known("reg") == "reg" and redact("reg") == "reg"
    assert redact_value({"connectors": ["reg"]}) == {"connectors": ["reg"]}
    assert redact_known("login as regis") == f"login as {MASK}"


def test_credentials_in_urls_and_authorization_values_are_masked_without_registration() -> None:
    text = redact(
        "GET http://admin:hunter22@example.org/x failed; Authorization: Basic YWRtaW46aHVudGVyMjI= "
        'body {"password": "hunter22", "api_key": "k-77", "note": "fine"} token=abc123 Bearer eyJhbGci.x'
    )
    for leaked in ("hunter22", "YWRtaW46aHVudGVyMjI=", "k-77", "abc123", "eyJhbGci"):
        assert leaked not in text, leaked
    assert "http://admin:***@example.org/x" in text and '"note": "fine"' in text


def test_ordinary_words_after_auth_scheme_names_stay() -> None:
    assert redact("Basic information about the token expired") == "Basic information about the token expired"


def test_url_passwords_in_plain_settings_are_registered_with_their_basic_header() -> None:
    register_url_credentials({"url": "http://dcsync:s3cret-pw!@127.0.0.1:8/x", "n": [1, {"u": "x"}]})
    header = base64.b64encode(b"dcsync:s3cret-pw!").decode()
    assert redact_known(f"Authorization: Basic {header}") == f"Authorization: Basic {MASK}"
    assert "s3cret-pw!" not in redact_known("echo s3cret-pw!")


def test_secret_fields_of_nested_settings_models_are_registered() -> None:
    class Auth(BaseModel):
        password: SecretStr

    class Settings(BaseModel):
        url: str
        auth: Auth

    register_secrets_of(Settings(url="https://u:url-pass-1@h", auth=Auth(password=SecretStr("nested-pw-9"))))
    assert redact_known("nested-pw-9 url-pass-1") == f"{MASK} {MASK}"


def test_data_named_like_a_secret_is_kept_in_payloads() -> None:
    """A record's ``token`` field is data (a voucher), not a credential: only registered secrets go."""
    register_secret(SECRET)
    value = {"token": "voucher-1", "nested": [{"k": f"x {SECRET} y"}], SECRET: 1}
    assert redact_value(value) == {"token": "voucher-1", "nested": [{"k": f"x {MASK} y"}], MASK: 1}


def test_the_state_store_never_persists_a_secret(tmp_path: Path) -> None:
    register_secret(SECRET)
    store = open_state_store(SqliteStateConfig(path="state.db"), tmp_path)
    try:
        with store.transaction() as tx:
            tx.add_dead_letter("c", Direction.PUSH, "r1", f"HTTP 400: password: {SECRET}", {"echo": SECRET})
            tx.park("c", "child", "parent", f"parent failed: {SECRET}")
            tx.add_conflict("c", "e1", "x1", "manual", {"a": SECRET}, {"a": 1}, {"a": f"<{SECRET}>"}, None)
        run = store.start_run("c", "push", "manual")
        store.finish_run(
            run, "failed", {}, f"remote said Authorization: Basic {base64.b64encode(b'u:v-123456').decode()}"
        )
    finally:
        store.close()
    dump = (tmp_path / "state.db").read_bytes()
    assert SECRET.encode() not in dump
    assert b"dS92LTEyMzQ1Ng" not in dump
    store = open_state_store(SqliteStateConfig(path="state.db"), tmp_path)
    try:
        (letter,) = store.dead_letters("c")
        assert letter.reason == "HTTP 400: password: ***" and letter.payload == {"echo": MASK}
        (conflict,) = store.conflicts("c")
        assert conflict.remote == {"a": f"<{MASK}>"} and conflict.local == {"a": 1}
        (record,) = store.runs("c")
        assert record.error == "remote said Authorization: ***"
    finally:
        store.close()


def test_both_json_paths_write_non_finite_numbers_as_null() -> None:
    """orjson writes NaN as null; the standard-library fallback (taken for a 70-bit integer) must too."""
    for value in ({"a": float("nan")}, {"a": float("inf"), "big": 2**70}, [float("-inf"), 2**70]):
        text = codec.dumps(value)
        assert "NaN" not in text and "Infinity" not in text
        assert b"NaN" not in codec.dumps_bytes(value) and b"Infinity" not in codec.dumps_bytes(value)
        assert json.loads(text) is not None
