"""Slack Web API contract checks: methods and arguments from the vendored spec, Block Kit limits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

OPENAPI_FILE = "slack_web_openapi_v2.json"
MANIFEST_SCHEMA_FILE = "slack-app-manifest.schema.json"

MESSAGE_BLOCK_LIMIT = 50
VIEW_BLOCK_LIMIT = 100
# Slack truncates longer `text`; a truncated fallback silently hides content.
TEXT_MAX_CHARS = 40_000

MESSAGE_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.postEphemeral", "chat.scheduleMessage"}
)
VIEW_METHODS = frozenset({"views.open", "views.push", "views.update", "views.publish"})
# views.update may target either kind, so it has no entry.
VIEW_TYPE_FOR_METHOD: Mapping[str, str] = {
    "views.open": "modal",
    "views.push": "modal",
    "views.publish": "home",
}

# The 2021 spec leaves these arguments optional although Slack rejects calls without them.
EXTRA_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "users.info": ("user",),
    "conversations.info": ("channel",),
    "conversations.members": ("channel",),
    "views.update": ("view",),
}
# At least one argument of each group must be present.
ONE_OF: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "conversations.open": (("channel", "users"),),
    "views.update": (("view_id", "external_id"),),
}


def data_path(name: str) -> Any:
    """Return a Traversable for a vendored data file (works from a wheel or a checkout)."""
    return resources.files("bot.sandbox.slack_standin").joinpath("data", name)


def load_manifest_schema() -> dict[str, Any]:
    """The vendored Slack app manifest JSON Schema."""
    loaded: dict[str, Any] = json.loads(data_path(MANIFEST_SCHEMA_FILE).read_text("utf-8"))
    return loaded


@dataclass(frozen=True)
class MethodSpec:
    """One Web API method as the spec describes it."""

    name: str
    params: frozenset[str]
    required: frozenset[str]
    accepts_json: bool
    deprecated: bool


class WebApiSpec:
    """The vendored OpenAPI description, reduced to what call checks need."""

    def __init__(self, methods: Mapping[str, MethodSpec]) -> None:
        self.methods = dict(methods)

    @classmethod
    def from_openapi(cls, document: Mapping[str, Any]) -> WebApiSpec:
        methods: dict[str, MethodSpec] = {}
        for path, operations in document["paths"].items():
            name = path.lstrip("/")
            params: set[str] = set()
            required: set[str] = set()
            consumes: set[str] = set()
            deprecated = False
            for operation in operations.values():
                consumes.update(operation.get("consumes", []))
                deprecated = deprecated or bool(operation.get("deprecated", False))
                for param in operation.get("parameters", []):
                    # Tokens travel in the Authorization header; auth is checked separately.
                    if param["name"] == "token":
                        continue
                    params.add(param["name"])
                    if param.get("required"):
                        required.add(param["name"])
            required.update(EXTRA_REQUIRED.get(name, ()))
            methods[name] = MethodSpec(
                name=name,
                params=frozenset(params),
                required=frozenset(required),
                accepts_json="application/json" in consumes,
                deprecated=deprecated,
            )
        return cls(methods)

    def __contains__(self, method: object) -> bool:
        return method in self.methods

    def check_arguments(self, method: str, args: Mapping[str, Any], *, as_json: bool) -> list[str]:
        """Messages for a call whose arguments Slack would reject; empty when it is fine."""
        spec = self.methods[method]
        problems: list[str] = []
        if as_json and not spec.accepts_json:
            problems.append(
                f"{method} does not accept JSON bodies; send form-encoded or query arguments"
            )
        for name in sorted(spec.required):
            if _is_missing(args.get(name)):
                problems.append(f"missing required argument: {name}")
        for group in ONE_OF.get(method, ()):
            if all(_is_missing(args.get(name)) for name in group):
                problems.append(f"one of these arguments is required: {', '.join(group)}")
        return problems

    def unknown_arguments(self, method: str, args: Mapping[str, Any]) -> list[str]:
        """Arguments the (2021) spec does not list: noted, not rejected, as newer ones exist."""
        spec = self.methods[method]
        return sorted(name for name in args if name not in spec.params)


@lru_cache(maxsize=1)
def load_web_api_spec() -> WebApiSpec:
    """Parse the vendored spec once per process (it is about 1 MB)."""
    document = json.loads(data_path(OPENAPI_FILE).read_text("utf-8"))
    return WebApiSpec.from_openapi(document)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def decode_json_argument(value: Any, name: str) -> tuple[Any, list[str]]:
    """Form-encoded calls carry `blocks`/`view` as JSON strings; JSON calls carry objects."""
    if isinstance(value, str):
        try:
            return json.loads(value), []
        except ValueError:
            return None, [f"{name} is not valid JSON"]
    return value, []


# The checks report malformed arguments as violations; these decoders only feed the workspace
# model, so they fall back to an empty value rather than report the same problem twice.


def as_blocks(raw: Any) -> list[dict[str, Any]]:
    """A `blocks` argument as a list (empty when absent or malformed)."""
    value, _ = decode_json_argument(raw, "blocks")
    return list(value) if isinstance(value, list) else []


def as_view(raw: Any) -> dict[str, Any]:
    """A `view` argument as a dict (empty when malformed)."""
    value, _ = decode_json_argument(raw, "view")
    return dict(value) if isinstance(value, dict) else {}


def as_list(raw: Any) -> list[Any]:
    """An `attachments` argument as a list (empty when absent or malformed)."""
    value, _ = decode_json_argument(raw, "attachments")
    return list(value) if isinstance(value, list) else []


def check_blocks(blocks: Any, *, limit: int, pointer: str = "/blocks") -> list[str]:
    """Validate a list of Block Kit blocks with slack_sdk and Slack's count limit."""
    if not isinstance(blocks, list):
        return [f"{pointer} must be an array of blocks [json-pointer:{pointer}]"]
    problems: list[str] = []
    if len(blocks) > limit:
        problems.append(
            f"{pointer} has {len(blocks)} blocks; Slack allows at most {limit} "
            f"[json-pointer:{pointer}]"
        )
    for index, raw in enumerate(blocks):
        problems.extend(check_block(raw, f"{pointer}/{index}"))
    return problems


def check_block(raw: Any, pointer: str) -> list[str]:
    """One block: known type, known keys, and slack_sdk's validators (nested ones too)."""
    if not isinstance(raw, dict):
        return [f"block must be an object [json-pointer:{pointer}]"]
    try:
        block = Block.parse(raw)
    except Exception as exc:  # slack_sdk raises several types for malformed input
        return [f"invalid block: {exc} [json-pointer:{pointer}]"]
    if block is None:
        return [f"unknown block type {raw.get('type')!r} [json-pointer:{pointer}]"]
    # slack_sdk only logs unknown keys; Slack rejects them, so a typo must fail here.
    unknown = sorted(set(raw) - set(block.attributes))
    if unknown:
        return [f"unknown field(s) {', '.join(unknown)} in {block.type} [json-pointer:{pointer}]"]
    try:
        block.validate_json()
        # to_dict() validates nested elements and text objects too.
        block.to_dict()
    except Exception as exc:
        return [f"invalid {block.type} block: {exc} [json-pointer:{pointer}]"]
    return []


def check_message_payload(args: Mapping[str, Any], *, allow_no_text: bool = False) -> list[str]:
    """Blocks valid and at most 50, plus a non-empty plain `text` fallback."""
    problems: list[str] = []
    text = args.get("text")
    if not allow_no_text and (not isinstance(text, str) or not text.strip()):
        problems.append(
            "missing text fallback: every message needs a non-empty plain `text` "
            "(notifications and screen readers use it)"
        )
    if isinstance(text, str) and len(text) > TEXT_MAX_CHARS:
        problems.append(f"text has {len(text)} characters; Slack truncates at {TEXT_MAX_CHARS}")
    if args.get("blocks") is not None:
        blocks, errors = decode_json_argument(args["blocks"], "blocks")
        problems.extend(errors)
        if not errors:
            problems.extend(check_blocks(blocks, limit=MESSAGE_BLOCK_LIMIT))
    if args.get("attachments") is not None:
        _, errors = decode_json_argument(args["attachments"], "attachments")
        problems.extend(errors)
    return problems


def check_view(raw: Any, *, expected_type: str | None = None) -> list[str]:
    """A modal or Home view: slack_sdk's View checks, 100 blocks, modal title and submit."""
    view, problems = decode_json_argument(raw, "view")
    if problems:
        return problems
    if not isinstance(view, dict):
        return ["view must be an object [json-pointer:/view]"]
    problems = []
    view_type = view.get("type")
    if view_type not in ("modal", "home"):
        problems.append('view.type must be "modal" or "home" [json-pointer:/view/type]')
    elif expected_type is not None and view_type != expected_type:
        problems.append(f"this method takes a {expected_type} view [json-pointer:/view/type]")
    blocks = view.get("blocks")
    if blocks is None:
        problems.append("view.blocks is required [json-pointer:/view/blocks]")
    else:
        problems.extend(check_blocks(blocks, limit=VIEW_BLOCK_LIMIT, pointer="/view/blocks"))
    if view_type == "modal":
        if not view.get("title"):
            problems.append("a modal needs a title [json-pointer:/view/title]")
        has_input = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks
        )
        if has_input and not view.get("submit"):
            problems.append("a modal with input blocks needs submit [json-pointer:/view/submit]")
    if not problems:
        try:
            View(**view).validate_json()
        except Exception as exc:
            problems.append(f"invalid view: {exc} [json-pointer:/view]")
    return problems


def check_call(
    spec: WebApiSpec, method: str, args: Mapping[str, Any], *, as_json: bool
) -> list[str]:
    """Everything the stand-in rejects as `invalid_arguments` for a known method."""
    problems = spec.check_arguments(method, args, as_json=as_json)
    if method in MESSAGE_METHODS:
        problems.extend(check_message_payload(args))
    if method in VIEW_METHODS and args.get("view") is not None:
        problems.extend(check_view(args["view"], expected_type=VIEW_TYPE_FOR_METHOD.get(method)))
    return problems


def find_forbidden(values: Iterable[str], payload: Any) -> bool:
    """True when any registered secret value occurs anywhere in a payload."""
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    return any(value and value in text for value in values)
