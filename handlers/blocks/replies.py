"""Answers to `/rotate list`, `history`, `map`, `help` and the dry run `start --dry-run`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from bot.catalog import Catalog
from bot.catalog.dependency_map import DependencyMap
from bot.domain.durations import format_duration
from bot.domain.lifecycle import PHASE_STATE
from bot.domain.rotation import Rotation
from bot.services.rotations import Plan
from handlers.blocks.common import (
    MESSAGE_BLOCK_LIMIT,
    Rendered,
    code,
    escape_mrkdwn,
    mention,
    sections,
    text_message,
    told,
    when,
)
from handlers.blocks.rotation import waiting_on


def plan_message(plan: Plan) -> Rendered:
    """The dry run. Back-end findings are in ``plan.blockers`` only when the viewer is an
    admin of the secret (RotationService.plan); otherwise a line says they are withheld."""
    secret = escape_mrkdwn(plan.secret)
    text = f"Dry run for {secret}: nothing was changed"
    lines = [
        f"*Dry run: {secret}* (nothing was changed)",
        f"issuer {code(plan.issuer_kind)} · store {code(plan.store_kind)} at "
        f"{code(plan.store_path)} · "
        + (f"*hard cutover* (no overlap; every owner validates within "
           f"{format_duration(plan.cutover_window)}; `/rotate start` opens the readiness "
           "review first)" if plan.cutover_window is not None
           else f"overlap {format_duration(plan.overlap)}")
        + f" · observe {format_duration(plan.observe)}",
    ]
    targets = dict(plan.targets)
    for i, (lane, consumers) in enumerate(plan.order, start=1):
        lines.append(f"*{i}. {escape_mrkdwn(lane)}*")
        if targets.get(lane):
            lines.append("   targets (rotabot writes the new credential here before the owners "
                         "are asked):")
            lines.extend(f"   :inbox_tray: {code(label)}" for label in targets[lane])
        lines.extend(
            f"   • {code(c.name)} · {mention(c.owner)} · {escape_mrkdwn(c.reload)}"
            for c in consumers
        )
    blocks = sections(lines)
    if plan.reload_notes:
        blocks.extend(
            sections([f"• {told(n)}" for n in plan.reload_notes], "*What each consumer needs*")
        )
    if plan.blockers:
        blocks.extend(
            sections([f"• {told(b)}" for b in plan.blockers], ":no_entry: *Blocks the start*")
        )
    if plan.warnings:
        blocks.extend(
            sections([f"• {told(w)}" for w in plan.warnings], ":warning: *Readiness notes*")
        )
    if not plan.backend_checked:
        blocks.extend(sections([
            ":lock: The store and issuer checks are shown to the admins of "
            f"{code(plan.secret)} only; an admin's dry run or `/rotate start` runs them."
        ]))
    return text, blocks[:MESSAGE_BLOCK_LIMIT]


def status_list(rotations: Sequence[Rotation], catalog_size: int | None = None) -> Rendered:
    more = (
        f" The catalog has {catalog_size} secrets: `/rotate secrets` lists them."
        if catalog_size is not None else ""
    )
    if not rotations:
        return text_message(
            f"No active rotations. Start one with `/rotate start SECRET`.{more}")
    lines = [
        f"• *{r.ref}* {code(r.secret)} · {escape_mrkdwn(PHASE_STATE[r.phase])}" + waiting_on(r)
        for r in rotations
    ]
    if more:
        lines.append(more.strip())
    return f"{len(rotations)} active rotations", sections(lines, "*Active rotations*")


def _in(delta: timedelta) -> str:
    """"in 12d", "in 5h": how far off the next rotation is, to the day (or hour)."""
    if delta >= timedelta(days=1):
        return f"in {delta.days}d"
    if delta >= timedelta(hours=1):
        return f"in {delta // timedelta(hours=1)}h"
    return "within the hour" if delta > timedelta(0) else "now"


def secrets_message(
    catalog: Catalog,
    active: Sequence[Rotation],
    next_at: Mapping[str, datetime] | None = None,
    now: datetime | None = None,
) -> Rendered:
    """`/rotate secrets`: catalog text only (names, descriptions, lanes), escaped, and when
    each scheduled or recurring secret rotates next (``next_at``, from ``now``)."""
    running = {r.secret: r for r in active}
    upcoming = next_at or {}
    lines = []
    for name in sorted(catalog.secrets):
        spec = catalog.secrets[name]
        lanes = " → ".join(escape_mrkdwn(lane) for lane in catalog.settings_for(name).lanes)
        rotating = running.get(name)
        state = (
            f" · *{rotating.ref}* {escape_mrkdwn(PHASE_STATE[rotating.phase])}" if rotating
            else f" · next: {_in(upcoming[name] - now)}" if name in upcoming and now else ""
        )
        description = f" · {escape_mrkdwn(spec.description[:120])}" if spec.description else ""
        lines.append(
            f"• {code(name)}{description} · {len(spec.consumers)} consumers · {lanes}{state}")
    if not lines:
        return text_message("The catalog has no secrets yet.")
    lines.append("`/rotate map SECRET` shows one secret's consumers and owners.")
    return f"{len(catalog.secrets)} secrets in the catalog", sections(
        lines, f"*Secrets in the catalog* ({len(catalog.secrets)})")[:MESSAGE_BLOCK_LIMIT]


def history_message(secret: str, rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message(f"{code(secret)} has never been rotated by rotabot.")
    lines = [
        f"• *{r.ref}* {escape_mrkdwn(PHASE_STATE[r.phase])} · started {when(r.created_at)} by "
        f"{mention(r.started_by)}" + (f" · finished {when(r.finished_at)}" if r.finished_at else "")
        for r in rotations
    ]
    return f"History of {escape_mrkdwn(secret)}", sections(lines, f"*History of {code(secret)}*")


def map_message(dmap: DependencyMap) -> Rendered:
    """Anyone may ask for the map: it shows catalog text only (escaped), never a back end's
    answer; the loader refuses credentials in the URLs it shows."""
    secret = escape_mrkdwn(dmap.secret)
    lines = [
        f"*{secret}*: {escape_mrkdwn(dmap.description)}",
        f"issuer {code(dmap.issuer_kind)}"
        + (f" ({escape_mrkdwn(dmap.issuer_name)})" if dmap.issuer_name else "")
        + ("" if dmap.dual_valid else " · :warning: hard cutover"),
        f"evidence of the old credential's use: {escape_mrkdwn(dmap.evidence)}",
        f"store {code(dmap.store_name)} ({escape_mrkdwn(dmap.store_kind)}, "
        f"{escape_mrkdwn(dmap.store_location)}) at {code(dmap.store_path)}",
    ]
    for lane in dmap.lanes:
        lines.append(f"*{escape_mrkdwn(lane.name)}*")
        if lane.targets:
            lines.append("   targets (written when the lane opens):")
        for t in lane.targets:
            notes = [f"store {code(t.store)}"] if t.store else []
            if t.field:
                notes.append(f"field {code(t.field)}")
            if t.reload:
                notes.append(f"reload hook {escape_mrkdwn(t.reload)}")
            lines.append(f"   :inbox_tray: {code(t.label)}" + "".join(f" · {n}" for n in notes))
        for c in lane.consumers:
            check = c.health_check.describe() if c.health_check else "no health check"
            lines.append(
                f"   • {code(c.name)} · {mention(c.owner)} · {escape_mrkdwn(c.reload)} · "
                f"{escape_mrkdwn(check)} · "
                f"rollback: {escape_mrkdwn(c.rollback or 'no rollback note')} · "
                f"evidence: {escape_mrkdwn(c.reports)}"
            )
    return f"Dependency map of {secret}", sections(lines)


def help_message(commands: Sequence[tuple[str, str]]) -> Rendered:
    """(usage, description) per subcommand; descriptions say "(admins)" where it applies."""
    lines = [
        "*rotabot* runs credential rotations with overlap, owner sign-off and "
        "evidence-based revocation.",
        *(f"• `{usage}`: {escape_mrkdwn(description)}" for usage, description in commands),
        "Owners act on the buttons in each rotation's thread; admins are listed per secret in "
        "the catalog.",
    ]
    return "rotabot help", sections(lines)
