"""Alembic migrations for rotabot's database (applied by ``storage.migrate.upgrade``)."""
