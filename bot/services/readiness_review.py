"""Live readiness of one secret: catalog findings plus whether its store and issuer answer.

The catalog findings come from bot.catalog.readiness (what is written); the live part asks the
configured back ends (what is there today): the store describes the secret's path, the issuer
can be built with the credentials the environment gives it. Every finding is a sentence a
person can act on; ``blocking`` ones stop a scheduled rotation from starting by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.catalog import Catalog
from bot.catalog.dependency_map import dependency_map
from bot.catalog.readiness import (
    HARD_CUTOVER,
    NO_CONSUMERS,
    OWNER_NOT_SLACK_ID,
    readiness_findings,
)
from bot.domain.credentials import IssuerError, StoreError
from bot.domain.errors import RotabotError
from bot.domain.schedule import BLOCKING, WARNING, ReviewFinding
from bot.services.ports import BackendRegistry

STORE_UNREACHABLE = "store-unreachable"
ISSUER_UNUSABLE = "issuer-unusable"

# Catalog findings a rotation cannot safely start with unattended: nobody to mention or
# nobody to confirm. A hard cutover is not one: this review, with every owner's confirmation,
# is exactly what it needs before it starts.
BLOCKING_CATALOG_CODES = frozenset({OWNER_NOT_SLACK_ID, NO_CONSUMERS})


@dataclass(frozen=True)
class ReadinessReview:
    secret: str
    checked_at: datetime
    findings: tuple[ReviewFinding, ...]
    owners: tuple[str, ...]  # consumer owners, each asked to confirm once

    @property
    def blocking(self) -> tuple[str, ...]:
        return tuple(f.message for f in self.findings if f.blocking)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f.message for f in self.findings if not f.blocking)

    def lines(self) -> list[str]:
        """Every finding in words, blocking first."""
        ordered = [f for f in self.findings if f.blocking] + [
            f for f in self.findings if not f.blocking
        ]
        return [f"{f.severity}: {f.subject}: {f.message}" for f in ordered]


def owners_of(catalog: Catalog, secret: str) -> tuple[str, ...]:
    """Each distinct consumer owner of a secret, in catalog order."""
    seen: dict[str, None] = {}
    for consumer in catalog.secret(secret).consumers.values():
        seen.setdefault(consumer.owner, None)
    return tuple(seen)


def review_readiness(
    catalog: Catalog, backends: BackendRegistry, secret: str, *, now: datetime
) -> ReadinessReview:
    """Catalog findings and live reachability for one secret (raises UnknownSecret)."""
    findings: list[ReviewFinding] = []
    for f in readiness_findings(catalog, secret):
        severity = BLOCKING if f.code in BLOCKING_CATALOG_CODES else WARNING
        findings.append(ReviewFinding(severity, "catalog", f.message, f.code))
    findings.extend(_store_findings(catalog, backends, secret))
    findings.extend(_issuer_findings(catalog, backends, secret, findings))
    return ReadinessReview(
        secret=secret, checked_at=now, findings=tuple(findings), owners=owners_of(catalog, secret)
    )


def _store_findings(
    catalog: Catalog, backends: BackendRegistry, secret: str
) -> list[ReviewFinding]:
    resolved = catalog.resolved_store(secret)
    location = dependency_map(catalog, secret).store_location
    where = f"store '{resolved.name}' ({resolved.kind}, {location})"
    try:
        backends.store_for(secret).describe(resolved.path)
    except (StoreError, IssuerError, RotabotError) as exc:
        return [
            ReviewFinding(
                BLOCKING, "store",
                f"{where} cannot be read for {resolved.path}: {exc}; fix access before "
                "rotation day (the new credential is written there)",
                STORE_UNREACHABLE,
            )
        ]
    except Exception as exc:  # an adapter bug must not hide the others' findings
        return [
            ReviewFinding(
                BLOCKING, "store",
                f"{where} failed unexpectedly ({type(exc).__name__}) describing "
                f"{resolved.path}; see the bot's log",
                STORE_UNREACHABLE,
            )
        ]
    return []


def _issuer_findings(
    catalog: Catalog,
    backends: BackendRegistry,
    secret: str,
    so_far: list[ReviewFinding],
) -> list[ReviewFinding]:
    resolved = catalog.resolved_issuer(secret)
    label = f"'{resolved.name}' ({resolved.kind})" if resolved.name else f"{resolved.kind} (inline)"
    try:
        issuer = backends.issuer_for(secret)
    except (IssuerError, StoreError, RotabotError) as exc:
        return [
            ReviewFinding(
                BLOCKING, "issuer",
                f"issuer {label} cannot be set up: {exc}",
                ISSUER_UNUSABLE,
            )
        ]
    except Exception as exc:  # as above: report, do not crash the review
        return [
            ReviewFinding(
                BLOCKING, "issuer",
                f"issuer {label} failed unexpectedly ({type(exc).__name__}) while being set "
                "up; see the bot's log",
                ISSUER_UNUSABLE,
            )
        ]
    already = any(f.code == HARD_CUTOVER for f in so_far)
    if not issuer.keeps_both_valid and not already:
        return [
            ReviewFinding(
                WARNING, "issuer",
                f"issuer {label} cannot keep two credentials valid at once: a hard cutover, "
                "run with every owner standing by (the old value stops working at mint)",
                HARD_CUTOVER,
            )
        ]
    return []
