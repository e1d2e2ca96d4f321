"""Database URLs for tests: a fresh SQLite file, and a private schema on the PostgreSQL server if reachable."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_BASE = "postgresql+psycopg://root@127.0.0.1:5432/test"


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=root dbname=test", connect_timeout=2):
            return True
    except Exception:  # noqa: BLE001 - any failure means: not reachable
        return False


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a new private schema, dropped afterwards."""
    import psycopg

    schema = f"aotune_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=root dbname=test", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect("host=127.0.0.1 port=5432 user=root dbname=test", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
