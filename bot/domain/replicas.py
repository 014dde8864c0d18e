"""Which catalog each replica runs, and when a replica's catalog is out of date.

Every replica records the sha256 of the catalog it runs and when it loaded it. The newest
one loaded is the one the operators meant: a replica running another refuses to act on
rotations until it is reloaded (it would read other owners, lanes or admins than the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.errors import RotabotError

# How much of a hash people are shown, as git shows commits.
SHORT_HASH = 12


@dataclass(frozen=True)
class ReplicaCatalog:
    replica_id: str
    catalog_sha256: str
    loaded_at: datetime  # when that replica loaded (or reloaded) the catalog
    seen_at: datetime  # its last sign of life


def short(sha256: str) -> str:
    return sha256[:SHORT_HASH]


def stale_reason(mine: str, newest: ReplicaCatalog | None) -> str | None:
    """Why a replica running catalog ``mine`` must not act, or None when it may."""
    if newest is None or newest.catalog_sha256 == mine:
        return None
    return (
        f"this replica runs catalog {short(mine)}, the others run "
        f"{short(newest.catalog_sha256)} (loaded by {newest.replica_id}); reload it: "
        "`/rotate reload` or SIGHUP, after updating its catalog file. Nothing was changed"
    )


class CatalogStale(RotabotError):
    """This replica runs another catalog than the newest one loaded: it acts on nothing."""
