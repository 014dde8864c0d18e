"""The ``aws-secretsmanager`` store and distribution target: AWS Secrets Manager through boto3
(blocking calls)."""

# How the Store contract maps onto Secrets Manager
# -------------------------------------------------
# * A store path is the secret's name (SecretId). A version reference is the VersionId.
# * rotabot uses Secrets Manager's own staging labels: AWSPENDING, AWSCURRENT, AWSPREVIOUS. A
#   label sits on one version at a time. Consumers read AWSCURRENT (GetSecretValue without a
#   version), so a pending version written beside it is invisible to them until the switch.
# * write_pending is PutSecretValue with VersionStages=[AWSPENDING]. Secrets Manager has no
#   check-and-set, so expected_current is checked before the write and again after it; if
#   AWSCURRENT moved in between, our version loses AWSPENDING again and the write is a
#   StoreConflict. A missing secret is created (CreateSecret); a secret without any version
#   (as Terraform's aws_secretsmanager_secret leaves it) counts as empty. Secrets Manager
#   attaches AWSCURRENT to a secret's first version whatever VersionStages says, so the first
#   version is current at once (there is no old value that consumers could lose).
#   AWSPENDING on the AWSCURRENT version means "no rotation in progress" to Secrets Manager (a
#   Lambda rotation's finishSecret leaves it so); describe reports no pending version then.
# * promote moves AWSCURRENT to the pending version (UpdateSecretVersionStage with
#   RemoveFromVersionId = the old current; Secrets Manager moves AWSPREVIOUS to that one itself)
#   and then removes AWSPENDING. The reference stays the same.
# * restore_previous writes the AWSPREVIOUS version's SecretString again as a new version and
#   moves AWSCURRENT to it, so history only grows; the rolled-back-from version becomes
#   AWSPREVIOUS and a pending version loses AWSPENDING (the rollback abandons it).
# * retire: Secrets Manager cannot delete one version's value. retire records the version in
#   the secret's tag ``rotabot-revoked`` (version ids, newest first, as many as fit in a tag
#   value's 256 characters), removes every staging label from it and moves the custom label
#   ``rotabot-revoked`` onto it. rotabot then refuses to read it (VersionUnavailable) and
#   describe shows it destroyed and revoked. The value itself stays in Secrets Manager: the
#   label keeps the most recently retired version; once the label moves on to the next
#   retired one, the earlier version has no label left, which makes it "deprecated", and
#   Secrets Manager deletes deprecated versions only when the secret has more than 100
#   versions (never ones younger than 24 hours). That is how Secrets Manager works; the
#   credential in it has been revoked at its issuer before retire is called.
# * Secrets Manager's VersionIds have no order. rotabot's own VersionIds (ClientRequestToken)
#   are UUIDv7 with sub-millisecond precision (RFC 9562, method 3), so describe takes the
#   creation time of rotabot's versions from their id and of anyone else's from CreatedDate.
#   That orders versions written within one second correctly (moto's CreatedDate has whole
#   seconds) and keeps mark_pending from taking an old, unlabelled version for a new one.
# * The manual issuer: a person writes the new value with
#       aws secretsmanager put-secret-value --secret-id NAME \
#           --secret-string file://new.json --version-stages AWSPENDING
#   and rotabot finds it as the pending version. Without ``--version-stages AWSPENDING``
#   Secrets Manager makes the new value AWSCURRENT at once: every consumer reads it before any
#   lane's turn, and rotabot sees a new current version, not a pending one. mark_pending also
#   accepts an unlabelled version newer than the current one (what ``put`` below writes).
# * SecretString holds the material's fields as a JSON object; a SecretString that is not a
#   JSON object is read as ``{"value": <the string>}``. SecretBinary is not supported.
#
# Every message below is built from the endpoint, the secret name, the version id and the AWS
# error code only; botocore's exception text (it may quote the server's message or, for a
# ParamValidationError, a parameter) is never forwarded, and every StoreError is raised after
# its except block so the botocore exception is not kept as ``__context__`` either.
#
# The bot's IAM policy needs, on the secrets it manages: secretsmanager:DescribeSecret,
# ListSecretVersionIds, GetSecretValue, PutSecretValue, UpdateSecretVersionStage, TagResource
# and, to create missing secrets, CreateSecret (plus kms:Decrypt/GenerateDataKey on a
# customer-managed KMS key).

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from bot.domain.credentials import (
    StoreConflict,
    StoreError,
    StoreState,
    UsageEvidence,
    VersionInfo,
    VersionLabel,
    VersionUnavailable,
    newer,
    select_field,
    single_value,
)
from bot.domain.secret_material import SecretMaterial

KIND = "aws-secretsmanager"
AWSCURRENT = "AWSCURRENT"
AWSPENDING = "AWSPENDING"
AWSPREVIOUS = "AWSPREVIOUS"
REVOKED_LABEL = "rotabot-revoked"
REVOKED_TAG = "rotabot-revoked"
# A short-lived label for ``put``: PutSecretValue needs at least one label, and one other than
# AWSCURRENT keeps the new version from going live; it is removed right after.
_PUT_LABEL = "rotabot-put"
_MAX_TAG_VALUE = 256
_AWS_LABELS = {
    AWSCURRENT: VersionLabel.CURRENT,
    AWSPENDING: VersionLabel.PENDING,
    AWSPREVIOUS: VersionLabel.PREVIOUS,
}
_DENIED = frozenset({
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
})

_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9.:#_-]{0,99}")

SecretsManagerClient = Any  # boto3 clients are generated at run time and have no static type

NO_READ_LOG = (
    "the aws-secretsmanager store does not read CloudTrail, so reads of the old version are "
    "not seen"
)


class SecretsManagerPermissionDenied(StoreError):
    """AWS refused the bot's credentials or its IAM policy does not allow the call."""


class SecretsManagerUnreachable(StoreError):
    """The Secrets Manager endpoint could not be reached (connection refused, DNS, timeout)."""


def make_secretsmanager_client(
    *,
    region: str,
    endpoint_url: str | None,
    env: Mapping[str, str],
    access_key_id_env: str | None,
    secret_access_key_env: str | None,
    timeout: float = 10,
) -> SecretsManagerClient:
    """A boto3 ``secretsmanager`` client. With both variable names given, the access key is
    read from ``env`` (StoreError naming a variable that is unset); without them boto3's default
    chain applies (instance or task role, AWS_PROFILE, the AWS_* variables). With the key
    given, creating the client makes no network call (the default chain may ask the instance
    metadata service for a role's key)."""
    where = endpoint_url or f"AWS Secrets Manager in {region}"
    if (access_key_id_env is None) != (secret_access_key_env is None):
        raise StoreError(
            f"{where}: give access_key_id_env and secret_access_key_env together, or neither "
            "for boto3's default credential chain"
        )
    keys: dict[str, str] = {}
    if access_key_id_env is not None and secret_access_key_env is not None:
        keys["aws_access_key_id"] = _env(env, access_key_id_env, where, "the AWS access key id")
        keys["aws_secret_access_key"] = _env(
            env, secret_access_key_env, where, "the AWS secret access key"
        )
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        # total_max_attempts counts the first try; botocore's max_attempts counts retries only.
        retries={"mode": "standard", "total_max_attempts": 3},
    )
    failure: StoreError | None = None
    try:
        # A session of its own: boto3's module-level default session is shared process state.
        session = boto3.session.Session()
        return session.client(
            "secretsmanager", region_name=region, endpoint_url=endpoint_url, config=config, **keys
        )
    except (ValueError, botocore.exceptions.BotoCoreError) as exc:
        failure = StoreError(
            f"cannot set up a Secrets Manager client for {where} ({type(exc).__name__}): check "
            "region and endpoint_url in the catalog"
        )
    raise failure  # outside the except block: no botocore text rides along as __context__


def _env(env: Mapping[str, str], name: str, where: str, what: str) -> str:
    value = env.get(name, "")
    if not value:
        raise StoreError(
            f"environment variable {name} is not set: export {what} for {where} there "
            "(rotabot reads store credentials from the environment, never from the catalog)"
        )
    return value


# --- VersionIds that carry their creation time ------------------------------------------------

_token_lock = threading.Lock()
_last_token_us = 0


def new_version_id() -> str:
    """A UUIDv7 for ClientRequestToken: 48 bits of Unix milliseconds, then 12 bits of the
    fraction of the millisecond (RFC 9562 method 3), then randomness. Strictly increasing within
    this process, so two versions written in the same microsecond still order."""
    global _last_token_us
    with _token_lock:
        now_us = max(time.time_ns() // 1000, _last_token_us + 1)
        _last_token_us = now_us
    ms, us = divmod(now_us, 1000)
    fraction = us * 4096 // 1000  # 0..4091: distinct microseconds stay distinct
    value = (ms << 80) | (0x7 << 76) | (fraction << 64) | (0b10 << 62) | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def version_id_time(version_id: str) -> datetime | None:
    """The creation time inside a UUIDv7 VersionId (None for any other id)."""
    try:
        parsed = uuid.UUID(version_id)
    except ValueError:
        return None
    if parsed.version != 7 or parsed.variant != uuid.RFC_4122:
        return None
    ms = parsed.int >> 80
    fraction = (parsed.int >> 64) & 0xFFF
    us = (fraction * 1000 + 4095) // 4096  # the inverse of new_version_id's rounding
    return datetime.fromtimestamp(ms // 1000, UTC) + timedelta(
        milliseconds=ms % 1000, microseconds=us
    )


# --- reading and writing SecretString ---------------------------------------------------------


def _as_text(value: object) -> str:
    # SecretMaterial holds strings; numbers and booleans written by people keep their JSON form.
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> SecretMaterial:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None  # not JSON: the whole string is the value
    if isinstance(parsed, dict):
        return SecretMaterial({str(k): _as_text(v) for k, v in parsed.items()})
    return SecretMaterial({"value": text})


def _encode(material: SecretMaterial) -> str:
    return json.dumps(material.reveal(), sort_keys=True)


# --- calls and errors -------------------------------------------------------------------------


class _Api:
    """One boto3 client and the mapping of its failures to legible StoreErrors."""

    def __init__(self, client: SecretsManagerClient) -> None:
        self.client = client
        self.url = str(client.meta.endpoint_url)
        self.region = str(client.meta.region_name)

    def put(self, secret: str, text: str, action: str, *stages: str) -> str:
        """PutSecretValue (with ``stages``, or AWS's default AWSCURRENT); the new VersionId."""
        extra: dict[str, Any] = {"VersionStages": list(stages)} if stages else {}
        response = self.call(
            "put_secret_value", action, secret,
            SecretId=secret, SecretString=text, ClientRequestToken=new_version_id(), **extra,
        )
        assert response is not None
        return str(response["VersionId"])

    def create(self, secret: str, text: str, *, exists_ok: bool = False) -> str | None:
        """CreateSecret with its first (AWSCURRENT) version; the VersionId, or None when it
        exists and ``exists_ok``."""
        created = self.call(
            "create_secret", "create", secret, exists_ok=exists_ok,
            Name=secret, SecretString=text, ClientRequestToken=new_version_id(),
        )
        return None if created is None else str(created["VersionId"])

    def call(
        self,
        operation: str,
        action: str,
        secret: str,
        *,
        missing_ok: bool = False,
        exists_ok: bool = False,
        conflict_codes: frozenset[str] = frozenset(),
        **params: Any,
    ) -> dict[str, Any] | None:
        """Run ``client.<operation>(**params)``. With ``missing_ok`` a ResourceNotFoundException
        returns None, with ``exists_ok`` a ResourceExistsException does; ``conflict_codes`` are
        error codes that mean someone changed the secret meanwhile (StoreConflict)."""
        method: Callable[..., dict[str, Any]] = getattr(self.client, operation)
        code: str | None = None
        status = 0
        failure: StoreError | None = None
        try:
            return method(**params)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code") or "unknown error")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            failure = SecretsManagerUnreachable(
                f"cannot reach AWS Secrets Manager at {self.url} while trying to {action} "
                f"secret {secret} ({type(exc).__name__}); check the endpoint and region in the "
                "catalog and the network, then resume the rotation"
            )
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
        ) as exc:
            failure = SecretsManagerPermissionDenied(
                f"no usable AWS credentials to {action} secret {secret} at {self.url} "
                f"({type(exc).__name__}): set access_key_id_env/secret_access_key_env in the "
                "catalog or give the bot a role, then resume the rotation"
            )
        except botocore.exceptions.BotoCoreError as exc:
            # ParamValidationError and the like: their text may quote a parameter; type only.
            failure = StoreError(
                f"AWS Secrets Manager at {self.url}: cannot {action} secret {secret} "
                f"({type(exc).__name__})"
            )
        if failure is not None:
            raise failure
        assert code is not None
        if code == "ResourceNotFoundException" and missing_ok:
            return None
        if code == "ResourceExistsException" and exists_ok:
            return None
        if code.isdigit():
            # botocore could not parse the error body and gives the HTTP status instead (moto
            # answers IAM refusals of this JSON API with an XML body).
            code = f"HTTP {code}"
        elif not _ERROR_CODE.fullmatch(code):
            code = "an unrecognised error code"  # only ever forward a code-shaped token
        raise self._error(code, status, operation, action, secret, conflict_codes)

    def _error(
        self,
        code: str,
        status: int,
        operation: str,
        action: str,
        secret: str,
        conflict_codes: frozenset[str],
    ) -> StoreError:
        if code in _DENIED or status in (401, 403):
            permission = "".join(part.title() for part in operation.split("_"))
            return SecretsManagerPermissionDenied(
                f"AWS Secrets Manager at {self.url} refused to {action} secret {secret} "
                f"({code}): check that the bot's access key is valid and that its IAM policy "
                f"allows secretsmanager:{permission} on this secret"
            )
        if code == "ResourceNotFoundException":
            return VersionUnavailable(
                f"AWS Secrets Manager at {self.url} ({self.region}): cannot {action} secret "
                f"{secret}: it or the version asked for does not exist (ResourceNotFoundException);"
                " check the secret name in the catalog"
            )
        if code == "ResourceExistsException" or code in conflict_codes:
            return StoreConflict(
                f"someone else changed secret {secret} at {self.url} meanwhile ({code} while "
                f"trying to {action} it); the rotation pauses: check who changed it, then resume"
            )
        return StoreError(
            f"AWS Secrets Manager at {self.url} failed to {action} secret {secret} ({code}); "
            "check the secret in the AWS console or CloudTrail, then resume the rotation"
        )

    def current_value(self, secret: str, action: str) -> tuple[str, str] | None:
        """(VersionId, SecretString) of AWSCURRENT, None when the secret or its value is missing.

        The stage is named explicitly: moto's server answers a GetSecretValue without one from
        its own record of the last PutSecretValue, which UpdateSecretVersionStage does not
        move; with the stage named, AWS and moto agree."""
        response = self.call(
            "get_secret_value", action, secret, missing_ok=True,
            SecretId=secret, VersionStage=AWSCURRENT,
        )
        if response is None:
            return None
        return str(response["VersionId"]), self._string(response, secret)

    def _string(self, response: Mapping[str, Any], secret: str) -> str:
        text = response.get("SecretString")
        if not isinstance(text, str):
            raise StoreError(
                f"secret {secret} at {self.url} holds a SecretBinary; rotabot reads and writes "
                "SecretString only (a JSON object of the credential's fields)"
            )
        return text


def _utc(value: object) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class _Version:
    version: str
    stages: frozenset[str]
    created_at: datetime | None


@dataclass(frozen=True)
class _View:
    """What DescribeSecret and ListSecretVersionIds show of one secret: references only."""

    versions: dict[str, _Version]
    revoked: tuple[str, ...]  # the rotabot-revoked tag, newest first

    def holder(self, stage: str) -> str | None:
        return next((v.version for v in self.versions.values() if stage in v.stages), None)

    @property
    def current(self) -> str | None:
        return self.holder(AWSCURRENT)

    @property
    def pending(self) -> str | None:
        # AWSPENDING on the AWSCURRENT version is Secrets Manager's "no rotation in progress".
        pending = self.holder(AWSPENDING)
        return None if pending == self.current else pending

    @property
    def previous(self) -> str | None:
        previous = self.holder(AWSPREVIOUS)
        return None if previous is None or self.is_revoked(previous) else previous

    def is_revoked(self, version: str) -> bool:
        info = self.versions.get(version)
        return version in self.revoked or (info is not None and REVOKED_LABEL in info.stages)

    def live(self) -> list[str]:
        return [v for v in self.versions if not self.is_revoked(v)]

    def labels(self, version: str) -> frozenset[VersionLabel]:
        found = {
            label
            for stage, label in _AWS_LABELS.items()
            if self.holder(stage) == version
        }
        if self.pending != version:
            found.discard(VersionLabel.PENDING)
        if self.is_revoked(version):
            found.discard(VersionLabel.PREVIOUS)
            found.add(VersionLabel.REVOKED)
        return frozenset(found)

    def info(self, version: str) -> VersionInfo:
        entry = self.versions[version]
        return VersionInfo(
            version=version,
            labels=self.labels(version),
            created_at=entry.created_at,
            # rotabot refuses to read a retired version; its value is gone once Secrets
            # Manager deletes the version (see the module comment).
            destroyed=self.is_revoked(version),
        )


class SecretsManagerStore:
    """Store on AWS Secrets Manager with its own staging labels (all calls block; run
    off-loop). See the module comment for how each Store operation maps onto the API."""

    kind = KIND

    def __init__(self, client: SecretsManagerClient) -> None:
        self._api = _Api(client)
        self.url = self._api.url

    def __repr__(self) -> str:
        return f"SecretsManagerStore(url={self.url!r}, region={self._api.region!r})"

    def reads_of(self, path: str, version: str, since: datetime) -> UsageEvidence:
        """Who read an old version is in CloudTrail, which rotabot does not read: say so
        (ReportsReads)."""
        return UsageEvidence(in_use=None, summary=NO_READ_LOG)

    # --- Store protocol -------------------------------------------------------------------

    def describe(self, path: str) -> StoreState:
        path = _clean(path)
        view = self._view(path)
        if view is None:
            return StoreState()
        versions = sorted(
            (view.info(v) for v in view.versions),
            key=lambda info: (info.created_at or _EPOCH, info.version),
        )
        return StoreState(
            versions=tuple(versions),
            current=view.current,
            pending=view.pending,
            previous=view.previous,
        )

    def read(self, path: str, version: str | None = None) -> SecretMaterial:
        path = _clean(path)
        if version is None:
            current = self._api.current_value(path, "read the current version of")
            if current is None:
                raise VersionUnavailable(
                    f"no current version of secret {path} at {self.url}: the secret does not "
                    "exist or holds no value yet"
                )
            return _decode(current[1])
        view = self._require_version(path, version, "read it")
        if view.is_revoked(version):
            raise VersionUnavailable(
                f"version {version} of secret {path} at {self.url} is retired (labelled or "
                f"tagged {REVOKED_LABEL}): rotabot does not read a revoked credential"
            )
        response = self._api.call(
            "get_secret_value", "read a version of", path, SecretId=path, VersionId=version
        )
        assert response is not None
        return _decode(self._api._string(response, path))

    def write_pending(
        self, path: str, material: SecretMaterial, *, expected_current: str | None
    ) -> str:
        path = _clean(path)
        view = self._view(path)
        if expected_current is None:
            if view is not None and view.live():
                raise StoreConflict(
                    f"secret {path} at {self.url} has versions (current: "
                    f"{view.current or 'none'}) but an empty secret was expected; someone else "
                    "wrote it meanwhile: check who, then resume"
                )
        elif view is None or view.current != expected_current:
            raise self._conflict(path, view, expected_current)
        if view is not None and view.pending is not None:
            raise StoreConflict(
                f"version {view.pending} of secret {path} at {self.url} is already pending "
                "(AWSPENDING): another rotation is writing, or a failed one left it; retire it "
                "first"
            )
        text = _encode(material)
        if view is None:
            # CreateSecret makes this first version AWSCURRENT; a secret created meanwhile by
            # someone else is a ResourceExistsException, i.e. a StoreConflict.
            created = self._api.create(path, text)
            assert created is not None
            return created
        version = self._api.put(path, text, "write a pending version of", AWSPENDING)
        # Secrets Manager has no check-and-set: look again. (A first version of an existing,
        # empty secret is AWSCURRENT now; Secrets Manager attaches it to a first version.)
        after = self._view(path)
        expected = expected_current if expected_current is not None else version
        if after is None or after.current != expected or after.holder(AWSPENDING) != version:
            if after is not None and after.holder(AWSPENDING) == version:
                self._try_unlabel(path, version, AWSPENDING)  # leave nothing half-pending
            raise self._conflict(path, after, expected_current)
        return version

    def mark_pending(self, path: str, version: str) -> None:
        path = _clean(path)
        view = self._require_version(path, version, "mark it pending")
        if view.is_revoked(version):
            raise VersionUnavailable(
                f"version {version} of secret {path} at {self.url} is retired: it cannot "
                "become pending; write a new version"
            )
        if view.pending == version:
            return  # noticed before, or put with --version-stages AWSPENDING: nothing to do
        labels = view.labels(version)
        current = view.info(view.current) if view.current is not None else None
        if labels or not newer(view.info(version), current):
            named = ", ".join(sorted(label.value for label in labels)) or "none"
            raise StoreError(
                f"cannot mark version {version} of secret {path} at {self.url} pending: it is "
                f"labelled ({named}) or not newer than the current version "
                f"({view.current or 'none'}); write a new version with "
                "--version-stages AWSPENDING"
            )
        if view.pending is not None:
            raise StoreConflict(
                f"version {view.pending} of secret {path} at {self.url} is already pending; "
                f"cannot also mark version {version}"
            )
        self._move(path, AWSPENDING, to=version, away_from=view.holder(AWSPENDING))

    def promote(self, path: str, version: str) -> str:
        path = _clean(path)
        view = self._require_version(path, version, "promote it")
        if view.current == version:
            # Promoted already (a retry after a crash, or a secret's first version).
            if AWSPENDING in view.versions[version].stages:
                self._unlabel(path, version, AWSPENDING)
            return version
        if view.pending != version:
            raise StoreConflict(
                f"cannot promote version {version} of secret {path} at {self.url}: it is not "
                f"pending (pending: {view.pending or 'none'}); someone else changed the labels "
                "meanwhile"
            )
        # Secrets Manager moves AWSPREVIOUS to the version AWSCURRENT leaves.
        self._move(path, AWSCURRENT, to=version, away_from=view.current)
        self._unlabel(path, version, AWSPENDING)
        return version

    def restore_previous(self, path: str) -> str:
        path = _clean(path)
        view = self._require(path)
        previous = view.previous
        if previous is None:
            raise VersionUnavailable(
                f"nothing to roll back to at secret {path} on {self.url}: no version is "
                "labelled AWSPREVIOUS (retired already?); rollback now means a new rotation"
            )
        response = self._api.call(
            "get_secret_value", "read the previous version of", path,
            SecretId=path, VersionId=previous,
        )
        assert response is not None
        text = self._api._string(response, path)
        # Written pending first and then switched like a promote, rather than a PutSecretValue
        # that takes AWSCURRENT directly: the same label moves on AWS and on moto (whose
        # PutSecretValue relabels from its own record of the last put, not from the labels).
        # AWSPENDING leaves an abandoned pending version here: the rollback ends that attempt.
        restored = self._api.put(path, text, "write the restored version of", AWSPENDING)
        self._move(path, AWSCURRENT, to=restored, away_from=view.current)
        self._unlabel(path, restored, AWSPENDING)
        return restored

    def retire(self, path: str, version: str) -> None:
        path = _clean(path)
        _check_version_id(path, version)
        view = self._require(path)
        if version not in view.versions:
            if version in view.revoked:
                return  # retired before, and Secrets Manager has deleted it since
            raise VersionUnavailable(f"secret {path} at {self.url} has no version {version}")
        if version == view.current:
            raise StoreError(
                f"refusing to retire version {version} of secret {path} at {self.url}: it is "
                "AWSCURRENT and consumers read it; promote or restore another version first"
            )
        # The tag first: should a label call below fail, rotabot already refuses to read it.
        revoked = view.revoked
        if version not in revoked:
            revoked = (version, *revoked)
            self._tag_revoked(path, revoked)
        stages = view.versions[version].stages
        # The label marks the most recently retired version only (a label sits on one version
        # at a time); retiring an older one again must not pull it back.
        if revoked[0] == version and REVOKED_LABEL not in stages:
            self._move(path, REVOKED_LABEL, to=version, away_from=view.holder(REVOKED_LABEL))
        for stage in sorted(stages - {REVOKED_LABEL}):
            self._unlabel(path, version, stage)

    # --- for people and the sandbox -------------------------------------------------------

    def put(self, path: str, material: SecretMaterial) -> str:
        """Write ``material`` as a new version without labels and return its VersionId (the
        bot notices it and labels it pending). The first version of a secret becomes
        AWSCURRENT (Secrets Manager does that): a secret being set up, not a rotation.

        A person does the same with ``aws secretsmanager put-secret-value ...
        --version-stages AWSPENDING`` (see the module comment)."""
        path = _clean(path)
        view = self._view(path)
        text = _encode(material)
        if view is None:
            created = self._api.create(path, text)
            assert created is not None
            return created
        if not view.versions:
            return self._api.put(path, text, "write the first version of")
        version = self._api.put(path, text, "write a new version of", _PUT_LABEL)
        self._unlabel(path, version, _PUT_LABEL)
        return version

    # --- helpers --------------------------------------------------------------------------

    def _view(self, path: str) -> _View | None:
        # DescribeSecret first: it answers ResourceNotFoundException for a missing secret,
        # where moto's server fails ListSecretVersionIds with an HTTP 500.
        secret = self._api.call(
            "describe_secret", "describe", path, missing_ok=True, SecretId=path
        )
        if secret is None:
            return None
        if secret.get("DeletedDate"):
            raise StoreError(
                f"secret {path} at {self.url} is scheduled for deletion: restore it "
                "(aws secretsmanager restore-secret) or fix the catalog, then resume"
            )
        tags = {str(t.get("Key")): str(t.get("Value")) for t in secret.get("Tags") or ()}
        revoked = tuple(tags.get(REVOKED_TAG, "").split())
        versions: dict[str, _Version] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "SecretId": path, "IncludeDeprecated": True, "MaxResults": 100,
            }
            if token:
                params["NextToken"] = token
            page = self._api.call(
                "list_secret_version_ids", "list the versions of", path, **params
            )
            assert page is not None
            for entry in page.get("Versions") or ():
                version = str(entry["VersionId"])
                versions[version] = _Version(
                    version=version,
                    stages=frozenset(str(s) for s in entry.get("VersionStages") or ()),
                    created_at=version_id_time(version) or _utc(entry.get("CreatedDate")),
                )
            token = page.get("NextToken") or None
            if token is None:
                return _View(versions, revoked)

    def _require(self, path: str) -> _View:
        view = self._view(path)
        if view is None:
            raise VersionUnavailable(
                f"secret {path} does not exist at {self.url}: check the secret name in the "
                "catalog"
            )
        return view

    def _require_version(self, path: str, version: str, purpose: str) -> _View:
        _check_version_id(path, version)
        view = self._require(path)
        if version not in view.versions:
            raise VersionUnavailable(
                f"secret {path} at {self.url} has no version {version} (never written, or "
                f"deleted by Secrets Manager): cannot {purpose}"
            )
        return view

    def _conflict(self, path: str, view: _View | None, expected: str | None) -> StoreConflict:
        now = view.current if view is not None else None
        return StoreConflict(
            f"someone else wrote secret {path} at {self.url} meanwhile (AWSCURRENT is "
            f"{now or 'nothing'}, expected {expected or 'nothing'}); the rotation pauses: "
            "check who wrote it, then resume"
        )

    def _move(self, path: str, stage: str, *, to: str, away_from: str | None) -> None:
        params: dict[str, Any] = {"SecretId": path, "VersionStage": stage, "MoveToVersionId": to}
        # Named always, though AWS would move the label itself: moto's server would leave it
        # on both versions.
        if away_from is not None and away_from != to:
            params["RemoveFromVersionId"] = away_from
        self._api.call(
            "update_secret_version_stage", f"move {stage} to version {to} of", path,
            conflict_codes=frozenset({"InvalidParameterException"}), **params,
        )

    def _unlabel(self, path: str, version: str, stage: str) -> None:
        self._api.call(
            "update_secret_version_stage", f"remove {stage} from version {version} of", path,
            conflict_codes=frozenset({"InvalidParameterException"}),
            SecretId=path, VersionStage=stage, RemoveFromVersionId=version,
        )

    def _try_unlabel(self, path: str, version: str, stage: str) -> None:
        # Best effort: the conflict raised next is what the operator needs to see.
        with contextlib.suppress(StoreError):
            self._unlabel(path, version, stage)

    def _tag_revoked(self, path: str, revoked: tuple[str, ...]) -> None:
        kept = list(dict.fromkeys(revoked))
        # A tag value holds 256 characters: the oldest entries go (Secrets Manager deletes
        # old unlabelled versions in the end anyway).
        while len(kept) > 1 and len(" ".join(kept)) > _MAX_TAG_VALUE:
            kept.pop()
        self._api.call(
            "tag_resource", "record a retired version on", path,
            SecretId=path, Tags=[{"Key": REVOKED_TAG, "Value": " ".join(kept)}],
        )


def _clean(path: str) -> str:
    cleaned = path.strip()
    if not cleaned:
        raise StoreError("a secret name is required (e.g. prod/model-api-key)")
    return cleaned


def _check_version_id(path: str, version: str) -> None:
    # VersionIds are 32-64 characters; botocore would refuse others with a ParamValidationError.
    if not 32 <= len(version) <= 64 or not version.isprintable() or " " in version:
        raise VersionUnavailable(f"{version!r} is not a Secrets Manager VersionId (for {path})")


class SecretsManagerTarget:
    """A distribution target in AWS Secrets Manager: a secret whose AWSCURRENT version a
    lane's consumers read (External Secrets Operator, the Secrets Manager agent or CSI driver,
    GetSecretValue in code). Each write is a PutSecretValue, which moves AWSCURRENT to the new
    version (and AWSPREVIOUS to the one before); a missing secret is created."""

    kind = KIND

    def __init__(
        self, client: SecretsManagerClient, secret_id: str, field: str | None = None
    ) -> None:
        self._api = _Api(client)
        self.secret_id = _clean(secret_id)
        self.field = field

    def __repr__(self) -> str:
        return f"SecretsManagerTarget(url={self._api.url!r}, secret_id={self.secret_id!r})"

    @property
    def where(self) -> str:
        return f"{KIND} {self.secret_id}"

    def write(self, material: SecretMaterial) -> str:
        selected = select_field(material, self.field, self.where)
        # One field: the bare value (what a consumer expecting a plain string reads); else JSON.
        text = single_value(selected, self.where) if self.field is not None else _encode(selected)
        secret = self.secret_id
        current = self._api.current_value(secret, "read the current value of")
        if current is not None and current[1] == text:
            return current[0]  # holds it already (a retried lane): no new version
        if current is None:
            created = self._api.create(secret, text, exists_ok=True)
            if created is not None:
                return created
            # It exists without a value (created empty, e.g. by Terraform): a first
            # PutSecretValue becomes AWSCURRENT.
        return self._api.put(secret, text, "write the lane's credential to")

    def read(self) -> SecretMaterial | None:
        current = self._api.current_value(self.secret_id, "read the current value of")
        if current is None:
            return None
        if self.field is not None:
            return SecretMaterial({self.field: current[1]})
        return _decode(current[1])
