"""aotune.cache_db: the trial store (SQLAlchemy), bundles, and the stdlib-only runtime loader.

Importing this package imports nothing heavy: `store`, `schema` and `bundle` pull in SQLAlchemy and
pydantic when they are imported; `loader` and `identity` are standard library only.
"""
