"""Encryption at rest of the state store's personal data: the codec, both backends with a key (the whole store
contract, plus what is on disk), mixed stores, rotation (``rekey``), and the one-line key errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from contracts.statestore_contract import StateStoreContract

from connector_core.config import load_config
from connector_core.state import Direction, Link, SqliteStateStore, state_cipher
from connector_core.state.rekey import rekey
from connector_core.state.sealing import (
    PLAIN,
    SEALED,
    StateCipher,
    StateKeyError,
    decode_key,
    generate_key,
    is_sealed,
    sealed_key_id,
)
from connector_core.state.store import SqlStateStore

KEY, OTHER = decode_key(generate_key()), decode_key(generate_key())
PERSON = {"name": "Amina Santos-Reyes", "date_of_birth": "1987-06-05T00:00:00.000Z"}


# -- the codec ---------------------------------------------------------------------------------------


def test_a_sealed_value_round_trips_and_hides_its_content() -> None:
    cipher = StateCipher(KEY)
    sealed = cipher.seal(PERSON, "links.snapshot")
    assert is_sealed(sealed) and sealed_key_id(sealed) == cipher.key_id
    assert "Amina" not in sealed and "1987" not in sealed
    assert cipher.open(sealed, "links.snapshot") == PERSON
    assert cipher.seal(PERSON, "links.snapshot") != sealed  # randomised: equal snapshots differ on disk


def test_reasons_seal_deterministically_payloads_do_not() -> None:
    cipher = StateCipher(KEY)
    one = cipher.seal("rejected: Amina Santos", "dead_letters.reason")
    assert one == cipher.seal("rejected: Amina Santos", "dead_letters.reason")  # GROUP BY still groups
    assert one != cipher.seal("rejected: Ana Cruz", "dead_letters.reason")
    assert cipher.open(one, "dead_letters.reason") == "rejected: Amina Santos"


def test_a_tampered_or_moved_value_is_a_clear_error_naming_the_place_not_the_value() -> None:
    cipher = StateCipher(KEY)
    sealed = cipher.seal(PERSON, "conflicts.local")
    head, body = sealed.rsplit(":", 1)
    flipped = head + ":" + ("A" if body[0] != "A" else "B") + body[1:]
    with pytest.raises(StateKeyError, match=r"conflicts.local \(row 7\) does not open.*corrupt") as info:
        cipher.open(flipped, "conflicts.local", 7)
    assert "Amina" not in str(info.value)
    with pytest.raises(StateKeyError, match="moved from another column"):
        cipher.open(sealed, "conflicts.remote", 7)  # associated data: a value cannot change columns


def test_a_wrong_or_missing_key_names_the_key_ids() -> None:
    sealed = StateCipher(KEY).seal(PERSON, "links.base")
    wrong = StateCipher(OTHER)
    with pytest.raises(StateKeyError, match=f"key id {sealed_key_id(sealed)}.*{wrong.key_id}"):
        wrong.open(sealed, "links.base", "c/g")
    with pytest.raises(StateKeyError, match="encrypted data .* state.encryption_key is not set"):
        PLAIN.open(sealed, "links.base", "c/g")
    assert StateCipher(OTHER, [KEY]).open(sealed, "links.base") == PERSON  # a previous key still opens


def test_plain_values_pass_and_a_bad_key_is_never_quoted() -> None:
    assert StateCipher(KEY).open({"plain": 1}, "links.snapshot") == {"plain": 1}
    assert StateCipher(KEY).open("dcsync: not an envelope", "runs.error") == "dcsync: not an envelope"
    assert PLAIN.seal(PERSON, "links.snapshot") == PERSON
    with pytest.raises(StateKeyError, match="not a key") as info:
        decode_key("hunter2-is-not-a-key")
    assert "hunter2" not in str(info.value)


# -- both backends with a key: the whole store contract, then what lands on disk -----------------------


def _sqlite(tmp_path: Path) -> Callable[[], SqliteStateStore]:
    def make() -> SqliteStateStore:
        store = SqliteStateStore(tmp_path / "state.db")
        store.use_cipher(StateCipher(KEY))
        return store

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sealed_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SqlStateStore]]:
    """Opens the same store each call, with the given cipher (the current key by default)."""
    opened: list[SqlStateStore] = []
    if request.param == "sqlite":
        path = tmp_path / "state.db"

        def raw() -> SqlStateStore:
            return SqliteStateStore(path)
    else:
        from connector_core.state.postgres import PostgresStateStore

        url, schema = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")

        def raw() -> SqlStateStore:
            return PostgresStateStore(url, schema=schema)

    def make(cipher: StateCipher | None = StateCipher(KEY)) -> SqlStateStore:
        store = raw()
        opened.append(store)
        if cipher is not None:
            store.use_cipher(cipher)
        return store

    yield make
    for store in opened:
        store.close()


class TestSealedSqliteStateStore(StateStoreContract):
    @pytest.fixture
    def make_state_store(self, tmp_path: Path) -> Callable[[], SqliteStateStore]:
        return _sqlite(tmp_path)


@pytest.mark.postgres
class TestSealedPostgresStateStore(StateStoreContract):
    @pytest.fixture
    def make_state_store(self, postgres_url: str, pg_schema: str) -> Callable[[], Any]:
        from connector_core.state.postgres import PostgresStateStore

        def make() -> PostgresStateStore:
            store = PostgresStateStore(postgres_url, schema=pg_schema)
            store.use_cipher(StateCipher(KEY))
            return store

        return make


def _fill(store: SqlStateStore, n: int = 3, tag: str = "") -> None:
    """Links, a dead letter, a conflict, a parked child and a failed run, each quoting a person."""
    with store.transaction() as txn:
        for i in range(n):
            person = {**PERSON, "name": f"Person{tag}{i} Secretname"}
            txn.upsert_link(Link("reg", f"g{tag}{i}", f"x{tag}{i}", "individual", person, base=person))
        txn.add_dead_letter("reg", Direction.PUSH, f"r{tag}", "remote said: Secretname is bad", PERSON)
        txn.add_conflict("reg", f"g{tag}0", f"x{tag}0", "manual", PERSON, PERSON, PERSON, None)
        txn.park("reg", f"c{tag}", f"g{tag}0", "parent Secretname not synced")
    run = store.start_run("reg", "push", "manual")
    store.finish_run(run, "failed", {"read": 1}, error="remote echoed Secretname")
    store.record_action(f"os:ops{tag}", "discard", connector="reg", detail={"note": "dup of Secretname"})


def _every_value(store: SqlStateStore) -> str:
    """Every row of every table as text, as the database holds it."""
    db = store._db
    if db.name == "sqlite":
        tables = [r[0] for r in db.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(row) for t in tables for row in db.rows(f"SELECT * FROM {t}"))
    tables = [
        r[0]
        for r in db.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
            (db.schema,),  # type: ignore[attr-defined]
        )
    ]
    return "\n".join(str(row) for t in tables for row in db.rows(f"SELECT t::text FROM {{s}}.{t} t"))


def test_every_personal_column_is_sealed_and_reads_back(sealed_store: Callable[..., SqlStateStore]) -> None:
    store = sealed_store()
    _fill(store)
    on_disk = _every_value(store)
    assert "Secretname" not in on_disk and "Amina" not in on_disk and "1987-06-05" not in on_disk
    assert "reg" in on_disk and "x1" in on_disk  # identifiers stay plain and queryable
    assert store.get_link("reg", "g1").snapshot["name"] == "Person1 Secretname"  # type: ignore[union-attr]
    (letter,) = store.dead_letters("reg")
    assert letter.reason == "remote said: Secretname is bad" and letter.payload == PERSON
    assert store.open_dead_letter_reasons("reg", Direction.PUSH, ["r"]) == {"r": letter.reason}
    (conflict,) = store.conflicts("reg")
    assert conflict.local == PERSON and store.parked("reg")[0].reason.startswith("parent Secretname")
    assert store.runs("reg")[0].error == "remote echoed Secretname"
    assert store.actions(action="discard")[0].detail == {"note": "dup of Secretname"}
    assert store.find_link("reg", "x2") is not None and store.open_counts("reg").dead_letters == 1


def test_equal_reasons_group_in_sql(sealed_store: Callable[..., SqlStateStore]) -> None:
    store = sealed_store()
    with store.transaction() as txn:
        for ref in ("a", "b", "c"):
            txn.add_dead_letter("reg", Direction.PUSH, ref, "same Secretname", {})
        txn.add_dead_letter("reg", Direction.PUSH, "d", "other", {})
    groups = store._db.rows("SELECT reason, count(*) FROM {s}.dead_letters GROUP BY reason ORDER BY 2")
    assert [n for _, n in groups] == [1, 3]
    assert all(is_sealed(reason) for reason, _ in groups)


def test_a_store_with_sealed_data_refuses_no_key_and_the_wrong_key_at_open(
    sealed_store: Callable[..., SqlStateStore],
) -> None:
    _fill(sealed_store())
    kid = StateCipher(KEY).key_id
    with pytest.raises(StateKeyError, match=rf"^state store holds encrypted data \(key id {kid}\) but "):
        sealed_store(PLAIN)
    with pytest.raises(StateKeyError, match=f"sealed under key id {kid}, but the configured keys have id"):
        sealed_store(StateCipher(OTHER))


def test_a_plain_store_switched_on_reads_mixed_rows_and_rekey_seals_them(
    sealed_store: Callable[..., SqlStateStore],
) -> None:
    plain = sealed_store(None)
    _fill(plain, tag="p")
    store = sealed_store()
    _fill(store, tag="s")
    assert store.get_link("reg", "gp1").snapshot["name"] == "Personp1 Secretname"  # type: ignore[union-attr]
    assert {d.ref for d in store.dead_letters("reg")} == {"rp", "rs"}
    assert sum(store.count_unsealed(t.table) for t in SEALED) > 0
    report = rekey(store, batch=2)
    assert report.left == 0 and report.rewritten["links"] == 3 and report.rewritten["runs"] == 1
    assert "Secretname" not in _every_value(store)
    assert store.get_link("reg", "gp2").snapshot["name"] == "Personp2 Secretname"  # type: ignore[union-attr]
    assert rekey(store).rewritten == dict.fromkeys(report.rewritten, 0)  # nothing left to do


def test_rotation_old_key_to_new_then_the_old_key_removed(
    sealed_store: Callable[..., SqlStateStore],
) -> None:
    _fill(sealed_store(), tag="a")
    both = sealed_store(StateCipher(OTHER, [KEY]))  # step 1: new key seals, old key still opens
    _fill(both, tag="b")  # runs go on meanwhile
    assert set(both.sealed_key_ids()) == {StateCipher(KEY).key_id, StateCipher(OTHER).key_id}
    report = rekey(both, batch=1)
    assert report.left == 0 and both.sealed_key_ids() == [StateCipher(OTHER).key_id]
    after = sealed_store(StateCipher(OTHER))  # step 3: the old key leaves the configuration
    assert after.get_link("reg", "ga0").snapshot == {**PERSON, "name": "Persona0 Secretname"}  # type: ignore[union-attr]
    assert {d.reason for d in after.dead_letters("reg")} == {"remote said: Secretname is bad"}
    assert len(after.runs("reg")) == 2 and all(r.error for r in after.runs("reg"))


def test_an_interrupted_rekey_resumes(sealed_store: Callable[..., SqlStateStore]) -> None:
    _fill(sealed_store(), n=7)
    store = sealed_store(StateCipher(OTHER, [KEY]))
    calls = 0

    def crash_after_two_pages(table: str, read: int, rewritten: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rekey(store, batch=3, progress=crash_after_two_pages)
    assert 0 < store.count_unsealed("links") < 7  # half-way: some links moved, each page committed
    assert len(store.sealed_key_ids()) == 2  # the old key is still needed
    report = rekey(store, batch=3)
    assert report.rewritten["links"] == 1 and report.left == 0  # only what was left
    assert sealed_store(StateCipher(OTHER)).get_link("reg", "g6") is not None


@pytest.mark.postgres
def test_rekey_leaves_a_row_a_run_rewrote_meanwhile(postgres_url: str, pg_schema: str) -> None:
    """PostgreSQL: rekey's page is read, then a run on another connection rewrites a row before rekey's
    update: the run's write stands. (SQLite's write transaction excludes every other writer.)"""
    from connector_core.state.postgres import PostgresStateStore

    plain = PostgresStateStore(postgres_url, schema=pg_schema)
    store = PostgresStateStore(postgres_url, schema=pg_schema)
    try:
        _fill(plain, n=2)
        store.use_cipher(StateCipher(KEY))
        plain.use_cipher(StateCipher(KEY))
        real = store._db.rows

        def rows_then_a_run_writes(text: str, params: Any = ()) -> Any:
            found = real(text, params)
            if "FROM {s}.links" in text and "CAST" in text:
                with plain.transaction() as txn:
                    txn.upsert_link(Link("reg", "g0", "x0", "individual", {"name": "New"}, base={}))
            return found

        store._db.rows = rows_then_a_run_writes  # type: ignore[method-assign]
        report = rekey(store, batch=10)
        store._db.rows = real  # type: ignore[method-assign]
        assert report.rewritten["links"] == 1 and report.left == 0  # g1 resealed; g0 was the run's
        assert store.get_link("reg", "g0").snapshot == {"name": "New"}  # type: ignore[union-attr]
        assert store.get_link("reg", "g1").snapshot["name"] == "Person1 Secretname"  # type: ignore[union-attr]
    finally:
        plain.close()
        store.close()


# -- configuration -----------------------------------------------------------------------------------


def test_a_key_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("DCSYNC_STATE_KEY", key)
    (tmp_path / "dcsync.yaml").write_text(
        "version: 1\nstate:\n  path: state.db\n  encryption_key: ${DCSYNC_STATE_KEY}\nconnectors: {}\n"
    )
    loaded = load_config(tmp_path / "dcsync.yaml")
    assert state_cipher(loaded.project.state, tmp_path).key_id == StateCipher(decode_key(key)).key_id
    (tmp_path / "state.key").write_text(key + "\n")
    (tmp_path / "dcsync.yaml").write_text(
        "version: 1\nstate:\n  path: state.db\n  encryption_key_file: state.key\nconnectors: {}\n"
    )
    loaded = load_config(tmp_path / "dcsync.yaml")
    assert state_cipher(loaded.project.state, tmp_path).key_id == StateCipher(decode_key(key)).key_id
    (tmp_path / "state.key").write_text("nonsense")
    with pytest.raises(StateKeyError, match=r"encryption_key_file .*state.key: not a key"):
        state_cipher(loaded.project.state, tmp_path)


def test_sqlite_file_and_wal_hold_no_plain_person(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)()
    keep = sqlite3.connect(tmp_path / "state.db")  # keeps the -wal file from being removed at close
    try:
        keep.execute("SELECT 1 FROM links").fetchall()
        _fill(store)
        store.close()
        raw = (tmp_path / "state.db").read_bytes() + (tmp_path / "state.db-wal").read_bytes()
        assert b"Secretname" not in raw and b"Amina" not in raw
    finally:
        keep.close()


def _pg_tables(url: str, schema: str) -> str:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
        return "\n".join(
            str(row[0])
            for (t,) in tables
            for row in conn.execute(f'SELECT t::text FROM "{schema}"."{t}" t').fetchall()
        )
