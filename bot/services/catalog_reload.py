"""Catalog reload without a restart (`/rotate reload`, SIGHUP), and the check that every
replica acts on the same catalog.

A reload validates the file first: an invalid one changes nothing and its problems come back
as the loader writes them (``file:line: field: message``). A valid one replaces the catalog
and its back ends in one step (bot/services/catalog_in_use.py) and is recorded, by sha256, as
the catalog this replica runs. Rotations in flight keep the consumers they started with: those
are rows of the rotation (consumer steps), not read from the catalog again; the reply names
the consumers a reload added to a secret in flight, and the command that adds each one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bot.catalog import Catalog, CatalogError, CatalogInvalid
from bot.domain.audit import AuditEvent
from bot.domain.clock import Clock
from bot.domain.errors import NotAuthorized
from bot.domain.replicas import CatalogStale, short, stale_reason
from bot.services.ports import BackendRegistry, ReplicaCatalogs
from bot.services.rotations import RotationService

log = logging.getLogger("rotabot.catalog")


@dataclass(frozen=True)
class ReloadOutcome:
    applied: bool
    sha256: str  # the catalog this replica runs now
    previous: str  # the one it ran before the reload
    errors: tuple[str, ...] = ()  # file:line: field: message, when refused
    added: tuple[str, ...] = ()  # secrets the new catalog adds
    removed: tuple[str, ...] = ()  # secrets it no longer has
    # Set when this replica still differs from the newest catalog after the reload.
    still_stale: str | None = None
    # Rotations in flight whose secret now lists consumers they lack, with the command that
    # adds each one (an admin's choice: they keep the list they started with otherwise).
    joinable: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if not self.applied:
            return (f"The catalog was not reloaded: it has {len(self.errors)} problem(s); this "
                    f"replica keeps running catalog {short(self.sha256)}.")
        if self.sha256 == self.previous:
            head = f"The catalog is unchanged ({short(self.sha256)})."
        else:
            head = f"Catalog {short(self.sha256)} is in use (was {short(self.previous)})."
        changes = [f"added: {', '.join(self.added)}" if self.added else "",
                   f"removed: {', '.join(self.removed)}" if self.removed else ""]
        tail = "; ".join(c for c in changes if c)
        return head + (f" Secrets {tail}." if tail else "") + (
            " Rotations in flight keep the consumers they started with.") + "".join(
            f" {line}" for line in self.joinable) + (
            f" Still refusing to act: {self.still_stale}" if self.still_stale else "")


@dataclass
class CatalogKeeper:
    """The catalog this replica runs, its reload, and whether it may act on rotations."""

    rotations: RotationService
    replicas: ReplicaCatalogs
    replica_id: str
    sha256: str  # of the catalog the service was built with
    file: str  # the catalog file, as problems name it
    # Reads and validates the catalog file: (catalog, sha256), or raises CatalogInvalid.
    read: Callable[[], tuple[Catalog, str]]
    backends_for: Callable[[Catalog], BackendRegistry]
    clock: Clock
    # Told of each catalog applied (the metrics keep their consumer list current).
    on_applied: list[Callable[[Catalog], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def announce(self) -> None:
        """Record, at start, the catalog this replica runs as the newest one."""
        self.replicas.record(self.replica_id, self.sha256, self.clock.now())

    def heartbeat(self) -> None:
        self.replicas.seen(self.replica_id, self.clock.now())

    def stale(self) -> str | None:
        """Why this replica must not act on rotations now, or None."""
        return stale_reason(self.sha256, self.replicas.newest())

    def guard(self) -> None:
        reason = self.stale()
        if reason is not None:
            raise CatalogStale(reason)

    def authorize_reload(self, actor: str) -> None:
        admins = self.rotations.catalog.defaults.admins
        if not any(self.rotations.owns(actor, admin) for admin in admins):
            log.warning("catalog reload refused: %s is not a catalog admin", actor)
            raise NotAuthorized("only the catalog's admins (defaults.admins) may reload the "
                                "catalog; nothing changed")

    def reload(self, actor: str | None = None) -> ReloadOutcome:
        """Read the catalog file again and apply it, or keep the one in use (``actor``: the
        admin asking; None for SIGHUP, which only the host's operator can send)."""
        if actor is not None:
            self.authorize_reload(actor)
        with self._lock:  # two reloads at once apply one after the other
            previous = self.sha256
            try:
                catalog, sha256 = self.read()
                self._keeps_rotations_in_flight(catalog)
            except CatalogInvalid as exc:
                log.warning("catalog reload refused (%d problems): %s kept",
                            len(exc.errors), short(previous))
                return ReloadOutcome(False, previous, previous,
                                     errors=tuple(str(e) for e in exc.errors))
            old = self.rotations.catalog
            outcome = ReloadOutcome(
                True, sha256, previous,
                added=tuple(sorted(set(catalog.secrets) - set(old.secrets))),
                removed=tuple(sorted(set(old.secrets) - set(catalog.secrets))),
            )
            if sha256 != previous:
                self.rotations.use_catalog(catalog, self.backends_for(catalog))
                self.sha256 = sha256
                for hook in self.on_applied:
                    hook(catalog)
                # Only a changed catalog claims to be the newest: reloading an old file on a
                # stale replica must not make the up-to-date ones stale.
                self.announce()
                self._audit(actor, outcome)
            log.info("catalog reloaded by %s: %s (was %s)", actor or "SIGHUP", short(sha256),
                     short(previous))
            return replace(outcome, still_stale=self.stale(),
                           joinable=self._joinable(catalog if sha256 != previous else None))

    def _joinable(self, catalog: Catalog | None) -> tuple[str, ...]:
        return tuple(
            f"{r.ref} of {r.secret} does not have {name}: "
            f"`/rotate add-consumer {r.ref} {name}` adds it."
            for r, missing in self.rotations.joinable(catalog)
            for name in missing
        )

    def _keeps_rotations_in_flight(self, catalog: Catalog) -> None:
        """A secret with a rotation in flight must stay: its store and issuer come from the
        catalog, and without them the rotation could neither finish nor roll back."""
        gone = [r for r in self.rotations.active() if r.secret not in catalog.secrets]
        if gone:
            raise CatalogInvalid([CatalogError(
                self.file, None, f"secrets.{r.secret}",
                f"{r.ref} is rotating it: finish or cancel {r.ref} before removing the secret "
                "from the catalog") for r in gone])

    def _audit(self, actor: str | None, outcome: ReloadOutcome) -> None:
        """Who changed the rules rotations run by, and when: in the audit log, under no
        secret ("")."""
        detail = {"replica": self.replica_id, "sha256": outcome.sha256,
                  "previous_sha256": outcome.previous}
        if outcome.added:
            detail["added"] = ", ".join(outcome.added)
        if outcome.removed:
            detail["removed"] = ", ".join(outcome.removed)
        with self.rotations.uow_factory() as uow:
            uow.audit.append(AuditEvent(
                at=self.clock.now(), actor=actor or "SIGHUP", action="catalog.reload",
                secret="", before=short(outcome.previous), after=short(outcome.sha256),
                detail=detail))
            uow.commit()
