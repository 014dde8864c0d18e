"""ReplicaCatalogs on the ``replicas`` table: which catalog each rotabot process runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, Table, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from bot.domain.replicas import ReplicaCatalog
from storage.engine import unavailable
from storage.tables import ReplicaRow, metadata

REPLICAS: Table = metadata.tables[ReplicaRow.__tablename__]


class SqlReplicaCatalogs:
    """Every method raises StoreUnavailable when the database cannot be reached."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, replica_id: str, catalog_sha256: str, loaded_at: datetime) -> None:
        """This replica loaded ``catalog_sha256`` at ``loaded_at`` (at start, on reload)."""
        values = {"catalog_sha256": catalog_sha256, "loaded_at": loaded_at, "seen_at": loaded_at}
        try:
            with self._engine.begin() as conn:
                changed = conn.execute(update(REPLICAS).where(
                    REPLICAS.c.replica_id == replica_id).values(**values)).rowcount
                if not changed:
                    conn.execute(insert(REPLICAS).values(replica_id=replica_id, **values))
        except IntegrityError:  # the same id inserted meanwhile: only this process uses it
            self.record(replica_id, catalog_sha256, loaded_at)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def seen(self, replica_id: str, at: datetime) -> None:
        """A sign of life: ``seen_at`` tells operators which replicas still run."""
        try:
            with self._engine.begin() as conn:
                conn.execute(update(REPLICAS).where(REPLICAS.c.replica_id == replica_id)
                             .values(seen_at=at))
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def newest(self) -> ReplicaCatalog | None:
        """The replica that loaded a catalog last (the newest catalog), or None."""
        stmt = select(REPLICAS).order_by(REPLICAS.c.loaded_at.desc(),
                                         REPLICAS.c.replica_id).limit(1)
        try:
            with self._engine.connect() as conn:
                row = conn.execute(stmt).mappings().first()
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        return None if row is None else _replica(row)


def _replica(row: RowMapping) -> ReplicaCatalog:
    return ReplicaCatalog(replica_id=row["replica_id"], catalog_sha256=row["catalog_sha256"],
                          loaded_at=row["loaded_at"], seen_at=row["seen_at"])
