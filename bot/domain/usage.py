"""Who still uses an old credential: what a platform saw, mapped to catalog consumers by their
``identity``, and the gate's words for it ("old credential used 4 min ago by 10.0.3.7 (not in
the catalog)")."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.credentials import UsageEvidence, UsageSeen
from bot.domain.durations import format_duration
from bot.domain.mentions import escape_mrkdwn
from bot.domain.rotation import Rotation

# Clients named one by one in the gate; the rest are counted.
SEEN_IN_WORDS = 5
# The notice kind of a thread note about an unmapped consumer (reminders_sent.kind).
UNMAPPED = "unmapped-usage"


class Identity(Protocol):
    """How a consumer shows up on a platform (the catalog's ``identity:``); None: not given."""

    @property
    def application_name(self) -> str | None: ...

    @property
    def address(self) -> str | None: ...  # an IP address or a CIDR network

    @property
    def vault_accessor(self) -> str | None: ...

    @property
    def user(self) -> str | None: ...


def _address_in(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return address == network  # a hostname or a unix socket: only an exact match


def matches(identity: Identity, seen: UsageSeen) -> bool:
    """Whether ``seen`` is this consumer: at least one field both know agrees, and none that
    both know disagrees (a shared NAT address must not map a stranger by address alone when
    its application_name says otherwise)."""
    hit = False
    for want, got in (
        (identity.application_name, seen.application_name),
        (identity.vault_accessor, seen.vault_accessor),
        (identity.user, seen.user),
    ):
        if want is None or got is None:
            continue
        if want != got:
            return False
        hit = True
    if identity.address is not None and seen.address is not None:
        if not _address_in(seen.address, identity.address):
            return False
        hit = True
    return hit


def map_usage(evidence: UsageEvidence, identities: Mapping[str, Identity]) -> UsageEvidence:
    """``evidence`` with each client it saw mapped to the first consumer (catalog order) whose
    identity matches, and its summary naming who: mapped consumers by name, the rest as not
    in the catalog."""
    if not evidence.seen:
        return evidence
    seen = tuple(
        replace(s, consumer=next(
            (name for name, ident in identities.items() if matches(ident, s)), None))
        for s in evidence.seen
    )
    return replace(evidence, seen=seen)


def identifies(seen: UsageSeen) -> str:
    """What identifies a client, e.g. ``10.0.3.7, application_name ingest``."""
    parts = [
        seen.address or "",
        f"application_name {seen.application_name}" if seen.application_name else "",
        f"Vault accessor {seen.vault_accessor}" if seen.vault_accessor else "",
        f"user {seen.user}" if seen.user else "",
    ]
    return ", ".join(p for p in parts if p) or "no address or name visible"


def _when(seen: UsageSeen, now: datetime) -> str:
    if seen.at is None:
        return "connected now"
    ago = now - seen.at
    if ago.total_seconds() < 60:
        return "used just now"
    # Minutes are precise enough to tell a straggler from a stale entry.
    return f"used {format_duration(timedelta(minutes=int(ago.total_seconds() // 60)))} ago"


def seen_words(seen: UsageSeen, now: datetime) -> str:
    """One client: ``used 4m ago by 10.0.3.7 (not in the catalog)`` or ``connected now by
    retriever (10.0.3.8)``."""
    how = f", {seen.how}" if seen.how else ""
    if seen.consumer is not None:
        return f"{_when(seen, now)} by {seen.consumer} ({identifies(seen)}){how}"
    return f"{_when(seen, now)} by {identifies(seen)} (not in the catalog){how}"


def unmapped_words(seen: UsageSeen, now: datetime) -> str:
    """``unmapped consumer 10.0.3.7, application_name cron (used 4m ago)``: for the thread,
    the message and App Home, so the map can be fixed before revoking."""
    return f"unmapped consumer {identifies(seen)} ({_when(seen, now)})"


def unmapped_text(rotation: Rotation, seen: UsageSeen, now: datetime) -> str:
    """The thread note about one unmapped consumer, in mrkdwn (platform text escaped)."""
    return (
        f":eyes: {rotation.ref} ({escape_mrkdwn(rotation.secret)}): the old credential is used by "
        f"an {escape_mrkdwn(unmapped_words(seen, now))}, which matches no consumer in the "
        "catalog. Find it and move it to the new credential, and add its `identity:` to its "
        "consumer in the catalog, before revoking."
    )


def usage_words(evidence: UsageEvidence, now: datetime) -> str:
    """The summary, then who: the line the gate shows when the old credential is in use."""
    if not evidence.seen:
        return evidence.summary
    named = [seen_words(s, now) for s in evidence.seen[:SEEN_IN_WORDS]]
    more = len(evidence.seen) - SEEN_IN_WORDS
    if more > 0:
        named.append(f"and {more} more")
    return f"{evidence.summary}: {'; '.join(named)}"


def usage_line(evidence: UsageEvidence, now: datetime) -> str:
    """The gate's and status's one line, whatever the platform could tell."""
    if evidence.in_use is None:
        return f"usage evidence: cannot tell ({evidence.summary})"
    if evidence.in_use:
        return f"old credential still in use: {usage_words(evidence, now)}"
    return f"usage evidence: {usage_words(evidence, now)}"


def unmapped(evidence: UsageEvidence | None) -> list[UsageSeen]:
    """The clients that match no catalog consumer, one per identity."""
    if evidence is None:
        return []
    out: dict[str, UsageSeen] = {}
    for s in evidence.seen:
        if s.consumer is None:
            out.setdefault(identifies(s), s)
    return list(out.values())


def combined(parts: Sequence[UsageEvidence]) -> UsageEvidence:
    """The issuer's evidence (first) and the store's as one: in use when either saw use;
    otherwise the issuer's verdict, since a store that saw no reads of the old version cannot
    say the credential itself is unused. A part that cannot tell is left out of the words
    when another part can, so a definite answer is not buried in "cannot tell"s."""
    if len(parts) == 1:
        return parts[0]
    in_use: bool | None = True if any(p.in_use for p in parts) else parts[0].in_use
    said = [p for p in parts if p.in_use is not None] if in_use is not None else list(parts)
    return UsageEvidence(
        in_use=in_use,
        summary="; ".join(p.summary for p in said),
        details=tuple(d for p in parts for d in p.details),
        seen=tuple(s for p in parts for s in p.seen),
    )
