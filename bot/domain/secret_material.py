"""A container for credential values that refuses to show them by accident."""

from __future__ import annotations

from collections.abc import Mapping

REDACTED = "<redacted>"


class SecretMaterial:
    """Credential fields (e.g. ``{"username": ..., "password": ...}``) held in memory only.

    ``repr``/``str``/formatting never show the values, so a stray log line, f-string or
    exception message cannot leak them. Call :meth:`reveal` at the one place that must
    hand the value to a back end.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._fields = dict(fields)

    def reveal(self) -> dict[str, str]:
        return dict(self._fields)

    def field_names(self) -> list[str]:
        return sorted(self._fields)

    def __repr__(self) -> str:
        return f"SecretMaterial(fields={self.field_names()}, values={REDACTED})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        # Constant-time-ish compare is not needed here; equality is for tests and no-op checks.
        return isinstance(other, SecretMaterial) and other._fields == self._fields

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._fields)))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretMaterial must not be pickled or persisted")
