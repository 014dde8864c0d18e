"""Catalog entries for freeze windows and two-person break-glass (read into bot.domain terms)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from bot.catalog.fields import Duration, _custom, _Strict
from bot.domain.freeze import (
    BadWindow,
    FreezeWindow,
    parse_dates,
    parse_weekly,
    whole_days,
    zone,
)


class FreezeWindowSpec(_Strict):
    """One freeze window: exactly one of ``dates``, ``weekly``, ``days`` or ``outside``.

    ``dates: "2026-12-20T00:00 .. 2027-01-04T00:00"`` (end excluded); ``weekly: "Fri 16:00-Mon
    08:00"`` or a list of such spans; ``days: [sat, sun]`` (whole days); ``outside: "Mon-Fri
    09:00-17:00"`` (frozen outside those hours: business hours only). Times are wall-clock
    times in ``time_zone`` (IANA, default UTC)."""

    name: str = Field(min_length=1, max_length=80)
    time_zone: str = "UTC"
    dates: str | None = None
    weekly: str | list[str] | None = None
    days: list[str] | None = None
    outside: str | list[str] | None = None

    @field_validator("time_zone")
    @classmethod
    def _zone_ok(cls, value: str) -> str:
        try:
            return zone(value)
        except BadWindow as exc:
            raise _custom("freeze", str(exc)) from None

    @model_validator(mode="after")
    def _one_kind(self) -> FreezeWindowSpec:
        given = [k for k in ("dates", "weekly", "days", "outside") if getattr(self, k) is not None]
        if len(given) != 1:
            raise _custom(
                "freeze",
                f"window {self.name!r}: give exactly one of dates, weekly, days or outside "
                f"(got {', '.join(given) or 'none'})",
            )
        try:
            self.window()
        except BadWindow as exc:
            raise _custom("freeze", f"window {self.name!r}: {exc}") from None
        return self

    def window(self) -> FreezeWindow:
        if self.dates is not None:
            start, end = parse_dates(self.dates)
            return FreezeWindow(self.name, self.time_zone, start=start, end=end)
        if self.days is not None:
            return FreezeWindow(self.name, self.time_zone, spans=whole_days(self.days))
        spans_text = self.weekly if self.weekly is not None else self.outside
        texts = [spans_text] if isinstance(spans_text, str) else list(spans_text or [])
        if not texts:
            raise BadWindow("list at least one span like 'Fri 16:00-Mon 08:00'")
        spans = tuple(s for text in texts for s in parse_weekly(text))
        return FreezeWindow(self.name, self.time_zone, spans=spans,
                            outside=self.outside is not None)


class BreakGlassSpec(_Strict):
    """Revoking past an unmet gate needs ``approvals`` admins (the requester and others)
    within ``within`` of the request."""

    approvals: int = Field(default=2, ge=2, le=5)
    within: Duration = timedelta(minutes=15)
