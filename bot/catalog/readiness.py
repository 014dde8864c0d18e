"""Readiness findings: what to fix in the catalog before rotation day (warnings, not errors).

The loader already refuses what cannot work at all (unknown fields, bad durations, undefined
stores or issuers). These findings are about what *would* work but makes a rotation risky:
consumers nobody can check, no way back, no lower-risk lane first, a hard cutover.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from bot.catalog import Catalog, SecretSpec
from bot.domain.durations import format_duration

# Slack ids: users U…/W… (W on Enterprise Grid), user groups S….
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")

# Stable codes, for tests and for rendering findings elsewhere (Slack, App Home).
NO_HEALTH_CHECK = "no-health-check"
NO_ROLLBACK_NOTE = "no-rollback-note"
TARGETS_WITHOUT_CONSUMERS = "targets-without-consumers"
UNLISTED_LANE = "unlisted-lane"
SINGLE_LANE = "single-lane"
OWNER_NOT_SLACK_ID = "owner-not-slack-id"
ADMIN_NOT_SLACK_ID = "admin-not-slack-id"
OBSERVE_EXCEEDS_OVERLAP = "observe-exceeds-overlap"
HARD_CUTOVER = "hard-cutover"
EVERY_WITHIN_LEAD = "every-within-lead"
MAX_AGE_BEFORE_EVERY = "max-age-before-every"

# Severities: a warning is something to fix; a note is a fact to know (a hard cutover).
WARNING = "warning"
NOTE = "note"
NO_CONSUMERS = "no-consumers"


@dataclass(frozen=True)
class Finding:
    """One readiness warning; ``field`` is the dotted path in the catalog, ``line`` its line."""

    severity: str
    secret: str | None
    field: str
    line: int | None
    message: str
    code: str = ""

    def format(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line is not None else file
        return f"{where}: {self.severity}: {self.field}: {self.message}"


def is_slack_id(text: str) -> bool:
    """A Slack user (``U…``/``W…``) or user-group (``S…``) id."""
    return bool(_SLACK_USER.match(text) or _SLACK_GROUP.match(text))


def readiness_findings(catalog: Catalog, secret: str | None = None) -> list[Finding]:
    """Every readiness warning for the catalog, or for one secret (raises UnknownSecret).

    For one secret, findings about ``defaults`` are included when they apply to it.
    """
    names = [catalog.secret(secret).name] if secret is not None else list(catalog.secrets)
    found: dict[tuple[str, str], Finding] = {}
    if secret is None:
        for f in _admin_findings(catalog, None):
            found.setdefault((f.field, f.message), f)
    for name in names:
        for f in _secret_findings(catalog, catalog.secrets[name]):
            # Findings about defaults come up once per secret; keep one.
            found.setdefault((f.field, f.message), f)
    return list(found.values())


def _finding(
    catalog: Catalog, secret: str | None, path: tuple[str | int, ...], code: str, message: str,
    severity: str = "warning",
) -> Finding:
    field = ""
    for part in path:  # same form as loader errors: secrets.x.admins[0]
        field += f"[{part}]" if isinstance(part, int) else ("." if field else "") + part
    return Finding(
        severity=severity,
        secret=secret,
        field=field,
        line=catalog.line_of(*path),
        message=message,
        code=code,
    )


def _admin_findings(catalog: Catalog, spec: SecretSpec | None) -> Iterator[Finding]:
    base: tuple[str, ...]
    if spec is not None and spec.admins is not None:
        admins, base, owner = spec.admins, ("secrets", spec.name, "admins"), spec.name
    else:
        admins, base, owner = catalog.defaults.admins, ("defaults", "admins"), None
    for i, admin in enumerate(admins):
        if not is_slack_id(admin):
            yield _finding(
                catalog, owner, (*base, i), ADMIN_NOT_SLACK_ID,
                f"admin '{admin}' is not a Slack user id (U... or W...) or user-group id "
                "(S...): the bot can only check who clicks switch, revoke or override "
                "against ids",
            )


def _every_findings(catalog: Catalog, spec: SecretSpec) -> Iterator[Finding]:
    """`every` that cannot work as meant: its review would overlap the rotation before, or
    `max_age` would nag the admins before the recurring rotation is even due."""
    settings = catalog.settings_for(spec.name)
    if settings.every is None:
        return
    owner = spec.name if spec.every is not None else None
    path = ("secrets", spec.name, "every") if spec.every is not None else ("defaults", "every")
    every = format_duration(settings.every)
    if settings.every <= settings.readiness_lead:
        yield _finding(
            catalog, owner, path, EVERY_WITHIN_LEAD,
            f"every ({every}) is not longer than readiness_lead "
            f"({format_duration(settings.readiness_lead)}): each review would be posted as "
            "soon as the rotation before it finished; make every longer",
        )
    if settings.max_age is not None and settings.max_age < settings.every:
        yield _finding(
            catalog, owner, path, MAX_AGE_BEFORE_EVERY,
            f"max_age ({format_duration(settings.max_age)}) is shorter than every ({every}): "
            "the admins are reminded that it is due before its recurring rotation comes; "
            "set max_age a little above every",
        )


def _secret_findings(catalog: Catalog, spec: SecretSpec) -> Iterator[Finding]:
    name = spec.name
    settings = catalog.settings_for(name)
    lanes = settings.lanes
    base = ("secrets", name)

    yield from _admin_findings(catalog, spec)

    if not spec.consumers:
        yield _finding(
            catalog, name, base, NO_CONSUMERS,
            f"{name} lists no consumers: a rotation would have nobody to validate or sign "
            "off; list every service, job and pipeline that reads this secret",
        )

    lanes_with_consumers = {c.lane for c in spec.consumers.values()}
    for lane in spec.targets:
        if lane not in lanes_with_consumers:
            yield _finding(
                catalog, name, (*base, "targets", lane), TARGETS_WITHOUT_CONSUMERS,
                f"the {lane} lane has targets but no consumers: a rotation never opens it, so "
                "rotabot never writes them; list the consumers that read them under that lane",
            )

    for consumer in spec.consumers.values():
        cpath = (*base, "consumers", consumer.name)
        who = f"{consumer.name} ({consumer.lane})"
        if not is_slack_id(consumer.owner):
            yield _finding(
                catalog, name, (*cpath, "owner"), OWNER_NOT_SLACK_ID,
                f"owner '{consumer.owner}' of {consumer.name} is not a Slack user id (U... or "
                "W...) or user-group id (S...): the bot mentions owners to ask for sign-off "
                "and checks who clicks, so use the id (Slack profile > Copy member ID)",
            )
        if consumer.lane not in lanes:
            yield _finding(
                catalog, name, (*cpath, "lane"), UNLISTED_LANE,
                f"lane '{consumer.lane}' is not in lanes ({', '.join(lanes)}): add it to "
                f"lanes at its place in the validation order; until then {consumer.name} "
                "validates after every listed lane",
            )
        if consumer.health_check is None:
            yield _finding(
                catalog, name, cpath, NO_HEALTH_CHECK,
                f"{who} has no health_check: add a health_check so {consumer.name} can be "
                "checked on its real dependency path, not just 'the process is up'",
            )
        if consumer.reload in ("restart", "staged") and not (consumer.rollback or "").strip():
            yield _finding(
                catalog, name, cpath, NO_ROLLBACK_NOTE,
                f"{who} reloads by {consumer.reload} but has no rollback note: write in "
                f"rollback how to put {consumer.name} back on the previous credential, "
                "before rotation day rather than during an incident",
            )

    used = {c.lane for c in spec.consumers.values()}
    if len(used) == 1:
        (lane,) = used
        # All in the first (lowest-risk) lane is fine: that lane *is* the first check.
        if not lanes or lane != lanes[0]:
            yield _finding(
                catalog, name, (*base, "consumers"), SINGLE_LANE,
                f"all consumers of {name} are in lane '{lane}', so nothing is validated in a "
                "lower-risk lane first: add the consumer's dev or staging instance in an "
                "earlier lane",
            )

    # A hard cutover has no overlap to outlast: the old value is gone at mint.
    if not settings.hard_cutover and settings.observe > settings.overlap:
        path: tuple[str, ...]
        if spec.observe is not None:
            path, owner = (*base, "observe"), name
        elif spec.overlap is not None:
            path, owner = (*base, "overlap"), name
        else:
            path, owner = ("defaults", "observe"), None
        obs, ovl = format_duration(settings.observe), format_duration(settings.overlap)
        yield _finding(
            catalog, owner, path, OBSERVE_EXCEEDS_OVERLAP,
            f"observe ({obs}) is longer than overlap ({ovl}): the old credential must stay "
            f"valid through the whole observation window; raise overlap to at least {obs} or "
            "shorten observe",
        )

    yield from _every_findings(catalog, spec)

    issuer = catalog.resolved_issuer(name)
    if settings.hard_cutover:
        label = f"'{issuer.name}' ({issuer.kind})" if issuer.name else f"{issuer.kind} (inline)"
        why = (
            f"issuer {label} cannot keep two credentials valid at once"
            if not issuer.dual_valid
            else "it is marked `overlap: none`"
        )
        window = format_duration(settings.cutover_window)
        yield _finding(
            catalog, name, (*base, "issuer" if not issuer.dual_valid else "overlap"),
            HARD_CUTOVER,
            f"hard cutover: {why}, so the old value stops working when the new one is "
            "issued. rotabot runs it as a coordinated cutover: every owner confirms readiness "
            f"first, then every target is written at once and each owner validates within "
            f"{window} (cutover_window); rollback issues another replacement",
            # What the secret is, not a flaw to fix: `catalog check --strict` passes it.
            severity=NOTE,
        )
