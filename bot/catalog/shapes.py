"""What a credential looks like, so the catalog can refuse one without ever repeating it.

The catalog holds names and references; a credential pasted where a name, a URL or a request
body goes would be shown to anyone by `/rotate map` and the dry run, and echoed by
`rotabot catalog check`. These functions say *what shape* a value has ("a GitHub token", "a
long random string") and never return any part of the value itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Token formats providers publish, found anywhere in a text. Each needs enough of a tail that
# prose ("ask-me", "sk-learn") does not match. (pattern, what it is called in a message)
_TOKENS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,})"),
     "a GitHub token"),
    (re.compile(r"(?<![A-Za-z0-9])(?:xox[abposre]-[A-Za-z0-9-]{8,}|xapp-[0-9]-[A-Za-z0-9-]{8,})"),
     "a Slack token"),
    (re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{8,}"), "an Anthropic API key"),
    (re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-)?[A-Za-z0-9_-]{16,}"), "an API key (sk-...)"),
    (re.compile(r"(?<![A-Za-z0-9])[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}"), "a Stripe key"),
    (re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"),
     "an AWS access key id"),
    (re.compile(r"(?<![A-Za-z0-9])glpat-[A-Za-z0-9_-]{16,}"), "a GitLab token"),
    (re.compile(r"(?<![A-Za-z0-9])hv[sbr]\.[A-Za-z0-9_-]{20,}"), "a Vault token"),
    (re.compile(r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{30,}"), "a Google API key"),
    (re.compile(r"(?<![A-Za-z0-9])npm_[A-Za-z0-9]{30,}"), "an npm token"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
     "a JSON web token"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
)

# Where the whole value is meant to be a *name* (an environment variable), a known token
# prefix is enough: nobody names a variable ghp_... or AKIA....
_NAME_PREFIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:gh[pousr]_|github_pat_)"), "a GitHub token"),
    (re.compile(r"^(?:xox[abposre]-|xapp-)"), "a Slack token"),
    (re.compile(r"^sk-ant-"), "an Anthropic API key"),
    (re.compile(r"^sk-"), "an API key (sk-...)"),
    (re.compile(r"^[rsp]k_(?:live|test)_"), "a Stripe key"),
    (re.compile(r"^(?:AKIA|ASIA)[0-9A-Z]{8,}$"), "an AWS access key id"),
    (re.compile(r"^glpat-"), "a GitLab token"),
    (re.compile(r"^hv[sbr]\."), "a Vault token"),
    (re.compile(r"^AIza[0-9A-Za-z_-]{20,}"), "a Google API key"),
    (re.compile(r"^npm_[A-Za-z0-9]{20,}"), "an npm token"),
)

RANDOM = "a long random-looking string (a key or token)"

# Query (and fragment) parameters that carry credentials, compared lower-case with '-' as '_'.
CREDENTIAL_PARAMS = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth_token", "api_token",
    "apikey", "api_key", "key", "secret", "client_secret", "password", "passwd", "pwd",
    "pass", "signature", "sig", "auth", "x_amz_signature", "x_amz_credential",
    "x_amz_security_token", "private_key", "session_token", "credential", "credentials",
})

# Keys of a request body (`json:`) whose value is a credential when written literally.
CREDENTIAL_BODY_KEYS = CREDENTIAL_PARAMS | {"authorization", "bearer", "client_key"}

_RUN = re.compile(r"[A-Za-z0-9]+")
_RUN_WITH_SEPARATORS = re.compile(r"[A-Za-z0-9_-]+")
_DIGIT_GROUPS = re.compile(r"[0-9]+")
_HEX = re.compile(r"^[0-9a-fA-F]{32,}$")


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _random_run(run: str) -> bool:
    """One run of letters and digits that reads like a generated key rather than words:
    long, with digits scattered among letters, or densely mixed case."""
    if len(run) < 16:
        return False
    digits = sum(c.isdigit() for c in run)
    letters = sum(c.isalpha() for c in run)
    if _HEX.match(run) and digits:
        return True
    # Words with a number ("REGION2024", "v2-example") have at most one group of digits.
    if digits and letters and len(_DIGIT_GROUPS.findall(run)) >= 2 and _entropy(run) >= 3.2:
        return True
    mixed = any(c.islower() for c in run) and any(c.isupper() for c in run)
    return mixed and len(run) >= 24 and _entropy(run) >= 4.2


def token_shape(text: str) -> str | None:
    """What kind of credential ``text`` contains somewhere, or None (any text: a
    description, a rollback note, a header name)."""
    for pattern, what in _TOKENS:
        if pattern.search(text):
            return what
    return None


def value_shape(text: str) -> str | None:
    """What credential shape a value meant to be public data (a URL part, a body value)
    has: a known token anywhere in it, or a long random-looking run."""
    found = token_shape(text)
    if found is not None:
        return found
    if any(_random_run(run) for run in _RUN.findall(text)):
        return RANDOM
    # URL-safe base64 has '-' and '_' too: all three classes, long and dense.
    for run in _RUN_WITH_SEPARATORS.findall(text):
        if len(run) >= 20 and _entropy(run) >= 4.0 and all((
            any(c.islower() for c in run), any(c.isupper() for c in run),
            any(c.isdigit() for c in run),
        )):
            return RANDOM
    return None


def env_name_shape(name: str) -> str | None:
    """What credential shape a would-be environment variable name has, or None."""
    for pattern, what in _NAME_PREFIXES:
        if pattern.search(name):
            return what
    return value_shape(name)


def _placeholder(value: str) -> bool:
    # {key_id} and friends are filled in by the bot, not credentials.
    return bool(re.fullmatch(r"\{[A-Za-z_]+\}", value))


def url_problem(url: str) -> str | None:
    """Why an http(s) URL must not be in the catalog (it carries a credential), in words that
    name the part and the shape but never repeat it; None when it is fine."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        what = "a password" if parts.password is not None else "a user name"
        return f"has {what} in it (user:password@host)"
    for part, text in (("query", parts.query), ("fragment", parts.fragment)):
        for name, value in parse_qsl(text, keep_blank_values=True):
            key = name.strip().lower().replace("-", "_")
            if key in CREDENTIAL_PARAMS and value and not _placeholder(value):
                return f"has a credential in its {part} (parameter '{key}')"
            shape = value_shape(name) or value_shape(value)
            if shape is not None:
                return f"has {shape} in its {part}"
    shape = value_shape(parts.path)
    if shape is not None:
        return f"has {shape} in its path"
    return None


def _key_path(path: tuple[str, ...]) -> str:
    safe = [k for k in path if re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", k) and not value_shape(k)]
    return ".".join(safe) if len(safe) == len(path) else "a nested value"


def body_problems(body: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Literal credentials in a request body: a credential key with a value, or a value with
    a credential's shape. Each problem names the key path (keys are names) and the shape."""
    if isinstance(body, dict):
        for key, value in body.items():
            sub = (*path, str(key))
            normalized = str(key).strip().lower().replace("-", "_")
            if normalized in CREDENTIAL_BODY_KEYS and isinstance(value, str | int) and (
                str(value) and not _placeholder(str(value))
            ):
                yield f"'{_key_path(sub)}' holds a literal credential"
                continue
            shape = value_shape(str(key))
            if shape is not None:
                yield f"a key has {shape}"
                continue
            yield from body_problems(value, sub)
    elif isinstance(body, list):
        for i, item in enumerate(body):
            yield from body_problems(item, (*path, str(i)))
    elif isinstance(body, str):
        shape = value_shape(body)
        if shape is not None:
            where = f"'{_key_path(path)}'" if path else "the body"
            yield f"{where} has {shape}"


def redact_credentials(text: str, placeholder: str = "[redacted]") -> str:
    """Free text from a person (a problem report, a reason) with every credential-shaped run
    replaced: a key pasted into a report must not reach Slack, the audit trail or a log."""
    for pattern, _ in _TOKENS:
        text = pattern.sub(placeholder, text)

    def run(match: re.Match[str]) -> str:
        word = match.group(0)
        return placeholder if value_shape(word) is not None else word

    return _RUN_WITH_SEPARATORS.sub(run, text)
