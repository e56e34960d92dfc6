"""The operator console at scale: 100,000 dead letters and 10,000 runs, through the real ASGI app.

Seeds a state store (SQLite, then PostgreSQL when reachable) with ``--letters`` open dead letters of two
connectors in a few reasons (the largest group holds 60%) and ``--runs`` runs, serves the console with uvicorn
on a free loopback port, logs in, and times, ``--repeat`` times each:

- the grouped view (``GROUP BY`` connector, direction, reason in the store),
- a group's first page and a deep keyset page (``after`` the id 60% into the group),
- the runs page, first and deep (``before`` an id near the oldest).

Each store is measured plain and sealed (``state.encryption_key``: reasons sealed deterministically, so
``GROUP BY`` still groups; payloads opened as the rows are read). Baselines measured in the same run on the
same store: the bare store query behind each page, and the deep
page written with ``OFFSET`` (what keyset paging avoids). Figures are medians (and p95) in milliseconds.

Usage: python bench/console.py [--letters 100000] [--runs 10000] [--repeat 20] [--no-postgres] [--no-sealed]
PostgreSQL at ``DCSYNC_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from connector_core.console.app import console_app, standalone_app
from connector_core.console.auth import Logins
from connector_core.project import Project
from connector_core.state.redacting import RedactingStateStore
from connector_core.state.sealing import generate_key
from connector_core.state.store import _DEAD_LETTER_COLUMNS as COLUMNS
from connector_core.testing.server import serve

POSTGRES_URL = os.environ.get("DCSYNC_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"
REASONS = (  # share of the letters, reason (the remote's message)
    (0.60, "phone_number: not a valid phone number"),
    (0.25, "national_id: already registered to another individual"),
    (0.10, "birthdate: in the future"),
    (0.05, "gender: not one of female, male, other"),
)
PASSWORD = "bench-password-123"


def _config(workdir: Path, state: str) -> Path:
    config = workdir / "dcsync.yaml"
    config.write_text(
        f"{state}connectors:\n"
        "  reg:\n    type: mock\n    settings:\n      url: http://127.0.0.1:9\n"
        "  other:\n    type: mock\n    settings:\n      url: http://127.0.0.1:9\n"
    )
    return config


def _backend(state: Any) -> Any:
    """The SQL store under the redacting wrapper: the bench seeds it with bulk inserts, and its bare queries
    are the baseline (the pages add redaction, rendering and HTTP)."""
    while isinstance(state, RedactingStateStore):
        state = state.inner
    return state


def _seed(project: Project, letters: int, runs: int) -> None:
    store = _backend(project.state)
    db = store._db
    seal = store._cipher.seal  # as the store writes them: sealed when it has a key
    now = "2026-01-01T00:00:00.000Z"
    rows = []
    n = 0
    for share, reason in REASONS:
        stored_reason = seal(reason, "dead_letters.reason")
        for _ in range(int(letters * share)):
            connector = "reg" if n % 10 else "other"
            payload = db.json_in(seal({"entity": {"guid": f"ref-{n}"}}, "dead_letters.payload"))
            rows.append((connector, "push", f"ref-{n}", stored_reason, payload, now))
            n += 1
    with db.transaction():
        for start in range(0, len(rows), 10_000):
            db.executemany(
                "INSERT INTO {s}.dead_letters (connector, direction, ref, reason, payload, attempts, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 'open', ?, ?)",
                [(*r, now) for r in rows[start : start + 10_000]],
            )
        run_rows = [
            ("reg" if i % 4 else "other", ("push", "pull", "both")[i % 3], "schedule", now, now,
             "failed" if i % 17 == 0 else "ok", db.json_in({"read": i % 100, "dead_lettered": i % 7}))
            for i in range(runs)
        ]  # fmt: skip
        db.executemany(
            "INSERT INTO {s}.runs (connector, direction, trigger, started_at, finished_at, outcome, counts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            run_rows,
        )


def _time(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    call()  # warm: the first request compiles templates, the first query warms the cache
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.95))]


def _login(client: httpx.Client) -> None:
    import re

    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    done = client.post("/ui/login", data={"name": "bench", "password": PASSWORD, "csrf_token": csrf.group(1)})
    assert done.status_code in (200, 303), done.status_code


def bench(name: str, state_yaml: str, letters: int, runs: int, repeat: int, with_index: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), state_yaml)
        project = Project.open(config)
        try:
            started = time.perf_counter()
            _seed(project, letters, runs)
            if with_index:  # what an index on a group's key would change (not in the migrations)
                _backend(project.state)._db.execute(
                    "CREATE INDEX bench_dead_letters_group ON {s}.dead_letters "
                    "(connector, direction, reason, id) WHERE status = 'open'"
                )
                name += " + group index"
            print(f"\n{name}: seeded {letters:,} dead letters and {runs:,} runs in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            store = _backend(project.state)
            big = REASONS[0][1]
            group_ids = [
                r[0]
                for r in store._db.rows(
                    "SELECT id FROM {s}.dead_letters WHERE connector = 'reg' AND reason = ? ORDER BY id",
                    (store._cipher.seal(big, "dead_letters.reason"),),
                )
            ]
            deep_after = group_ids[int(len(group_ids) * 0.6)]
            deep_offset = int(len(group_ids) * 0.6) + 1
            oldest_runs = store.run_page("reg", limit=1, before_id=60)
            deep_before = oldest_runs[0].id if oldest_runs else 60
            app = standalone_app(console_app(project, Logins({"bench": PASSWORD})))
            with serve(app) as served, httpx.Client(base_url=served.url, timeout=60) as client:
                _login(client)
                group = {"connector": "reg", "direction": "push", "reason": big}

                def get(path: str, **params: Any) -> Callable[[], Any]:
                    def call() -> None:
                        answer = client.get(path, params=params)
                        assert answer.status_code == 200, (path, answer.status_code)

                    return call

                rows = [
                    ("grouped view", get("/ui/dead-letters", connector="reg"),
                     lambda: store.dead_letter_groups("reg")),
                    ("group, first page", get("/ui/dead-letters", **group),
                     lambda: store.dead_letter_page("reg", direction="push", reason=big, limit=51)),
                    ("group, deep keyset page", get("/ui/dead-letters", **group, after=deep_after),
                     lambda: store.dead_letter_page("reg", direction="push", reason=big, after_id=deep_after,
                                                    limit=51)),
                    ("runs, first page", get("/ui/runs", connector="reg"),
                     lambda: store.run_page("reg", limit=51)),
                    ("runs, deep keyset page", get("/ui/runs", connector="reg", before=deep_before),
                     lambda: store.run_page("reg", before_id=deep_before, limit=51)),
                ]  # fmt: skip
                print(f"{'request':<26} {'page ms (p95)':>15} {'store query ms':>15} {'page/query':>11}")
                for label, page, query in rows:
                    page_ms, page_p95 = _time(page, repeat)
                    query_ms, _ = _time(query, repeat)
                    print(f"{label:<26} {page_ms:>8.1f} ({page_p95:>4.0f}) {query_ms:>15.2f} "
                          f"{page_ms / max(query_ms, 0.01):>10.1f}x")  # fmt: skip
                offset_ms, _ = _time(
                    lambda: [  # mapped (opened) like the keyset page's rows, so only the paging differs
                        store._dead_letter(row)
                        for row in store._db.rows(
                            f"SELECT {COLUMNS} FROM {{s}}.dead_letters WHERE status = 'open' AND connector = "
                            "'reg' AND direction = 'push' AND reason = ? ORDER BY id LIMIT 51 OFFSET ?",
                            (store._cipher.seal(big, "dead_letters.reason"), deep_offset),
                        )
                    ],
                    repeat,
                )
                keyset_ms, _ = _time(
                    lambda: store.dead_letter_page(
                        "reg", direction="push", reason=big, after_id=deep_after, limit=51
                    ),
                    repeat,
                )
                print(f"baseline: the same deep page by OFFSET {deep_offset:,}: {offset_ms:.2f} ms, "
                      f"by keyset {keyset_ms:.2f} ms ({offset_ms / max(keyset_ms, 0.01):.0f}x)")  # fmt: skip
        finally:
            project.close()


def _postgres_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--letters", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sealed", action="store_true", help="skip the runs with encryption at rest")
    parser.add_argument(
        "--group-index",
        action="store_true",
        help="also index (connector, direction, reason, id) WHERE status = 'open' (as a migration would)",
    )
    args = parser.parse_args()
    os.environ["BENCH_CONSOLE_KEY"] = generate_key()
    sealed = "  encryption_key: ${BENCH_CONSOLE_KEY}\n"
    variants = [("SQLite", "state:\n  backend: sqlite\n")]
    if not args.no_sealed:
        variants.append(("SQLite, sealed", f"state:\n  backend: sqlite\n{sealed}"))
    schemas = []
    if args.no_postgres:
        pass
    elif not _postgres_reachable():
        print("\nPostgreSQL not reachable: skipped")
    else:
        os.environ["BENCH_CONSOLE_PG"] = POSTGRES_URL
        for label, extra in (("PostgreSQL", ""), ("PostgreSQL, sealed", sealed)):
            if extra and args.no_sealed:
                continue
            schemas.append(f"bench_console_{uuid.uuid4().hex[:8]}")
            pg = (
                f"state:\n  backend: postgres\n  url: ${{BENCH_CONSOLE_PG}}\n  schema: {schemas[-1]}\n{extra}"
            )
            variants.append((label, pg))
    try:
        for label, state in variants:
            bench(label, state, args.letters, args.runs, args.repeat, args.group_index)
    finally:
        if schemas:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
