"""Answers to `/rotate list`, `history`, `map`, `help` and the dry run `start --dry-run`."""

from __future__ import annotations

from collections.abc import Sequence

from bot.catalog.dependency_map import DependencyMap
from bot.domain.durations import format_duration
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
        f"{code(plan.store_path)} · overlap {format_duration(plan.overlap)} · observe "
        f"{format_duration(plan.observe)}",
    ]
    for i, (lane, consumers) in enumerate(plan.order, start=1):
        lines.append(f"*{i}. {escape_mrkdwn(lane)}*")
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


def status_list(rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message("No active rotations. Start one with `/rotate start SECRET`.")
    lines = [f"• *{r.ref}* {code(r.secret)} · {r.phase.value}" + waiting_on(r) for r in rotations]
    return f"{len(rotations)} active rotations", sections(lines, "*Active rotations*")


def history_message(secret: str, rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message(f"{code(secret)} has never been rotated by rotabot.")
    lines = [
        f"• *{r.ref}* {r.phase.value} · started {when(r.created_at)} by "
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
        f"store {code(dmap.store_name)} ({escape_mrkdwn(dmap.store_kind)}, "
        f"{escape_mrkdwn(dmap.store_location)}) at {code(dmap.store_path)}",
    ]
    for lane in dmap.lanes:
        lines.append(f"*{escape_mrkdwn(lane.name)}*")
        for c in lane.consumers:
            check = c.health_check.describe() if c.health_check else "no health check"
            lines.append(
                f"   • {code(c.name)} · {mention(c.owner)} · {escape_mrkdwn(c.reload)} · "
                f"{escape_mrkdwn(check)} · "
                f"rollback: {escape_mrkdwn(c.rollback or 'no rollback note')}"
            )
    return f"Dependency map of {secret}", sections(lines)


def help_message(usage_lines: Sequence[str]) -> Rendered:
    lines = [
        "*rotabot* runs credential rotations with overlap, owner sign-off and "
        "evidence-based revocation.",
        "```" + "\n".join(usage_lines) + "```",
    ]
    return "rotabot help", sections(lines)
