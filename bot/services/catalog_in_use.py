"""The catalog a service acts on, swappable while it runs (`/rotate reload`, SIGHUP).

The catalog and the back ends built from it are one snapshot, replaced by a single
assignment. A request pins the snapshot current when it starts (:meth:`CatalogSlot.pinned`),
so a reload landing meanwhile never gives it the new catalog for one read and the old one for
the next: it finishes on the one it began with; the next request gets the new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.catalog import Catalog
from bot.services.ports import BackendRegistry

_V = TypeVar("_V")


@dataclass(frozen=True)
class CatalogInUse:
    catalog: Catalog
    backends: BackendRegistry


# The snapshot pinned by the request (listener thread, timer run) running in this context,
# with the slot it belongs to: a test process may hold several services.
_PINNED: ContextVar[tuple[CatalogSlot, CatalogInUse] | None] = ContextVar(
    "rotabot_catalog_pinned", default=None)


class CatalogSlot:
    """Where a service keeps its snapshot; mixed into the service (see CatalogPart)."""

    _in_use: CatalogInUse

    def in_use(self) -> CatalogInUse:
        pinned = _PINNED.get()
        if pinned is not None and pinned[0] is self:
            return pinned[1]
        return self._in_use

    def use_catalog(self, catalog: Catalog, backends: BackendRegistry) -> None:
        """From the next request on, act on ``catalog`` (one assignment: never half of it)."""
        self._in_use = CatalogInUse(catalog, backends)

    @contextmanager
    def pinned(self) -> Iterator[CatalogInUse]:
        """Within this block (this thread or task) every read sees one snapshot."""
        outer = _PINNED.get()
        if outer is not None and outer[0] is self:  # already pinned further up
            yield outer[1]
            return
        snapshot = self._in_use
        token = _PINNED.set((self, snapshot))
        try:
            yield snapshot
        finally:
            _PINNED.reset(token)


class CatalogPart(Generic[_V]):
    """A dataclass field (``catalog``, ``backends``) read from the slot's snapshot: the
    constructor and a plain assignment still set it, as before the catalog could change."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: CatalogSlot | None, owner: type | None = None) -> _V:
        if obj is None:  # asked by @dataclass for a default: there is none
            raise AttributeError(self._name)
        value: _V = getattr(obj.in_use(), self._name)
        return value

    def __set__(self, obj: CatalogSlot, value: _V) -> None:
        current: Any = obj.__dict__.get("_in_use")
        parts: dict[str, Any] = {"catalog": getattr(current, "catalog", None),
                                 "backends": getattr(current, "backends", None)}
        parts[self._name] = value
        obj.__dict__["_in_use"] = CatalogInUse(**parts)
