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
    mention,
    sections,
    text_message,
    when,
)
from handlers.blocks.rotation import waiting_on


def plan_message(plan: Plan) -> Rendered:
    text = f"Dry run for {plan.secret}: nothing was changed"
    lines = [
        f"*Dry run: {plan.secret}* (nothing was changed)",
        f"issuer `{plan.issuer_kind}` · store `{plan.store_kind}` at `{plan.store_path}` · "
        f"overlap {format_duration(plan.overlap)} · observe {format_duration(plan.observe)}",
    ]
    for i, (lane, consumers) in enumerate(plan.order, start=1):
        lines.append(f"*{i}. {lane}*")
        lines.extend(f"   • `{c.name}` · {mention(c.owner)} · {c.reload}" for c in consumers)
    blocks = sections(lines)
    if plan.reload_notes:
        blocks.extend(
            sections([f"• {n}" for n in plan.reload_notes], "*What each consumer needs*")
        )
    if plan.blockers:
        blocks.extend(sections([f"• {b}" for b in plan.blockers], ":no_entry: *Blocks the start*"))
    if plan.warnings:
        blocks.extend(sections([f"• {w}" for w in plan.warnings], ":warning: *Readiness notes*"))
    return text, blocks[:MESSAGE_BLOCK_LIMIT]


def status_list(rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message("No active rotations. Start one with `/rotate start SECRET`.")
    lines = [f"• *{r.ref}* `{r.secret}` · {r.phase.value}" + waiting_on(r) for r in rotations]
    return f"{len(rotations)} active rotations", sections(lines, "*Active rotations*")


def history_message(secret: str, rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message(f"`{secret}` has never been rotated by rotabot.")
    lines = [
        f"• *{r.ref}* {r.phase.value} · started {when(r.created_at)} by "
        f"{mention(r.started_by)}" + (f" · finished {when(r.finished_at)}" if r.finished_at else "")
        for r in rotations
    ]
    return f"History of {secret}", sections(lines, f"*History of `{secret}`*")


def map_message(dmap: DependencyMap) -> Rendered:
    lines = [
        f"*{dmap.secret}*: {dmap.description}",
        f"issuer `{dmap.issuer_kind}`"
        + (f" ({dmap.issuer_name})" if dmap.issuer_name else "")
        + ("" if dmap.dual_valid else " · :warning: hard cutover"),
        f"store `{dmap.store_name}` ({dmap.store_kind}, {dmap.store_location}) at "
        f"`{dmap.store_path}`",
    ]
    for lane in dmap.lanes:
        lines.append(f"*{lane.name}*")
        for c in lane.consumers:
            check = c.health_check.describe() if c.health_check else "no health check"
            lines.append(
                f"   • `{c.name}` · {mention(c.owner)} · {c.reload} · {check} · "
                f"rollback: {c.rollback or 'no rollback note'}"
            )
    return f"Dependency map of {dmap.secret}", sections(lines)


def help_message(usage_lines: Sequence[str]) -> Rendered:
    lines = [
        "*rotabot* runs credential rotations with overlap, owner sign-off and "
        "evidence-based revocation.",
        "```" + "\n".join(usage_lines) + "```",
    ]
    return "rotabot help", sections(lines)
