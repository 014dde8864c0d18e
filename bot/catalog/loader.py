"""Read catalog YAML into a Catalog, turning YAML and pydantic errors into ``file:line`` ones.

``load_catalog`` reports *every* problem at once, each with file, line and field path, e.g.
``catalog.yml:14: secrets.model-api-key.consumers.inference-api.reload: expected one of hot,
restart, staged, got 'restrat'``. Line numbers come from composing the YAML with PyYAML's node
API, which keeps the position of every key, so pydantic's error locations can be mapped back.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
from collections.abc import Mapping, Sequence
from inspect import isclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError

from bot.catalog.backends import _ISSUER_ADAPTER, IssuerConfig
from bot.catalog.fields import NEVER_HOLDS, _describe
from bot.catalog.model import DEFAULT_LANES, Catalog, CatalogError, CatalogInvalid
from bot.catalog.shapes import token_shape, value_shape

# Names are typed in `/rotate start NAME` and shown in Slack (mrkdwn), so no spaces or
# punctuation; lanes follow the same rule.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Lengths that fit every Slack surface a name appears in: a secret name is the value of an
# option in the /rotate start picker (Slack: 150 characters) and a consumer name goes into
# button values (2,000) and prompts; `POST /alerts` takes consumer and secret names of at
# most 100 and lanes of at most 50 (bot/domain/alert_intake.py), so a longer name could never
# be alerted on. Store and issuer names follow secret names; owners and admins go into
# Confirm-ready button values.
NAME_MAX = 100
LANE_MAX = 50
OWNER_MAX = 100
# A name or key longer than this is not repeated in full in a message.
_SHOWN_MAX = 60
_CREDENTIAL_KEY = re.compile(
    r"token|passw|secret|api_?key|credential|private_?key|^key$|^auth|^headers$|^bearer",
    re.IGNORECASE,
)


# --- loading ----------------------------------------------------------------------------


class CatalogUnreadable(CatalogInvalid):
    """The file itself could not be read (missing, a folder, no permission, not UTF-8): its
    one error has no line. Callers that chose the path can say how to choose another."""


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; raises CatalogInvalid listing every problem
    (CatalogUnreadable when there is no text to validate)."""
    return load_catalog_hashed(path)[0]


def load_catalog_hashed(path: str | Path) -> tuple[Catalog, str]:
    """load_catalog, and the sha256 (hex) of the bytes it validated: which catalog a replica
    runs, compared across replicas. Read once, so the hash is of what was parsed."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = CatalogError(file, None, "", f"cannot read the catalog: {reason}")
        raise CatalogUnreadable([error]) from None
    return parse_catalog(text, file), hashlib.sha256(raw).hexdigest()


def parse_catalog(text: str, file: str = "catalog.yml") -> Catalog:
    """Validate catalog YAML given as text; ``file`` is used in error messages."""
    try:
        return _parse_catalog(text, file)
    except RecursionError:
        # Nesting deeper than Python's stack (YAML's composer and our walkers recurse); a
        # real catalog is a few levels deep, so say so instead of crashing with a traceback.
        raise CatalogInvalid([CatalogError(
            file, 1, "", "invalid YAML: nested too deeply (a catalog is a few levels deep)"
        )]) from None


class _CatalogLoader(yaml.SafeLoader):
    """SafeLoader whose number and date constructors fail with the node's line: PyYAML's
    own raise a bare ValueError for scalars its resolver accepted (``0x_``, ``2001-02-30``)."""


def _guarded(tag: str) -> Any:
    construct = yaml.SafeLoader.yaml_constructors[tag]
    kind = tag.rsplit(":", 1)[-1]

    def wrapper(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError):
            # Not the value itself: a catalog field might hold something sensitive.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value as {kind}; quote it to keep it text",
                node.start_mark,
            ) from None

    return wrapper


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"):
    _CatalogLoader.add_constructor(_tag, _guarded(_tag))


def _parse_catalog(text: str, file: str) -> Catalog:
    try:
        # The reader rejects control characters as soon as it is built, before any mark.
        loader = _CatalogLoader(text)
    except yaml.reader.ReaderError as exc:
        at_line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise CatalogInvalid([CatalogError(
            file, at_line, "", f"invalid YAML: character {exc.character:#06x} is not allowed"
        )]) from None
    try:
        node = loader.get_single_node()
        errors = _duplicate_keys(node, (), file, set()) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        line = mark.line + 1 if mark is not None else None
        raise CatalogInvalid([CatalogError(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise CatalogInvalid([CatalogError(file, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()

    if node is None or not isinstance(data, dict):
        raise CatalogInvalid([CatalogError(
            file, 1, "",
            "expected a mapping with version, defaults, stores, issuers and secrets"
            + ("" if data is None else f", got {_describe(data)}"),
        )])
    lines: dict[tuple[str, ...], int] = {}
    _index_lines(node, (), lines, set())

    errors += _reference_errors(data, file, lines)
    catalog: Catalog | None = None
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        errors += [
            _translate(e, root_data=data, root_type=Catalog, prefix=(), file=file, lines=lines)
            for e in exc.errors()
        ]
    # A token anywhere, unless that field (or one holding it: a body) was already refused.
    refused = {e.field for e in errors if e.field}
    errors += [
        e for e in _token_errors(data, (), file, lines, set())
        if not any(e.field == f or e.field.startswith((f + ".", f + "[")) for f in refused)
    ]
    if errors or catalog is None:
        unique = list(dict.fromkeys(errors))
        unique.sort(key=lambda e: (e.line is None, e.line or 0))
        raise CatalogInvalid(unique)
    catalog._source = file
    catalog._lines = lines
    return catalog


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"<{node.tag}>"


def _index_lines(
    node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int], seen: set[int]
) -> None:
    """Record the line of every mapping key and list item (a later duplicate wins, as in YAML).

    Each node is walked once: content reached again through an alias gets no lines of its
    own, so its errors point at the line that uses the alias (and recursive or exponential
    aliases cannot hang the loader).
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, _key_text(key))
            lines[sub] = _line(key)
            _index_lines(value, sub, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            lines[sub] = _line(item)
            _index_lines(item, sub, lines, seen)


def _duplicate_keys(
    node: yaml.Node, path: tuple[str, ...], file: str, seen: set[int]
) -> list[CatalogError]:
    # YAML lets a later key silently replace an earlier one; in a catalog that usually means
    # a copy-pasted consumer whose first definition is lost.
    errors: list[CatalogError] = []
    if id(node) in seen:
        return errors
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            text = _key_text(key)
            if text == "<<":
                continue
            if text in first:
                errors.append(CatalogError(
                    file, _line(key), _dotted((*path, text)),
                    f"duplicate key {_quoted(text)} (first on line {first[text]}); YAML would "
                    "keep only the last one",
                ))
            else:
                first[text] = _line(key)
            errors += _duplicate_keys(value, (*path, text), file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            errors += _duplicate_keys(item, (*path, str(i)), file, seen)
    return errors


def _quoted(text: str) -> str:
    """``'text'`` for a message, unless it is too long to repeat or shaped like a credential
    (a key or name in the wrong place may be one): then what it is, not what it says."""
    shape = value_shape(text)
    if shape is not None:
        return f"(not repeated: it looks like {shape})"
    if len(text) > _SHOWN_MAX:
        return f"'{text[:40]}...' ({len(text)} characters)"
    return f"'{text}'"


def _path_part(part: str) -> str:
    # A field path repeats the names in it: never a credential-shaped one, never 2,000
    # characters of one.
    if value_shape(part) is not None:
        return "<hidden>"
    return part if len(part) <= _SHOWN_MAX else part[:40] + "..."


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _path_part(part)
    return out


def _line_for(lines: Mapping[tuple[str, ...], int], path: Sequence[str | int]) -> int:
    """The line of ``path``, or of its nearest written ancestor (a missing field's parent)."""
    key = tuple(str(p) for p in path)
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return 1


def _shown(value: Any) -> str:
    if isinstance(value, str):
        shape = value_shape(value)
        if shape is not None:
            return f"a value that looks like {shape} (not repeated: {NEVER_HOLDS})"
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, bool | int | float):
        return repr(value)
    return _describe(value)


def _check_name(
    what: str,
    name: Any,
    path: tuple[str | int, ...],
    file: str,
    lines: Mapping[tuple[str, ...], int],
    limit: int = NAME_MAX,
) -> list[CatalogError]:
    if not isinstance(name, str):
        return []
    where = file, _line_for(lines, path), _dotted(path)
    if len(name) > limit:
        return [CatalogError(
            *where,
            f"{what} name is {len(name)} characters long; at most {limit} fit everywhere "
            "it is shown in Slack (pickers, buttons, prompts) and named in alerts",
        )]
    if not _NAME.match(name):
        why = "it is typed in /rotate commands" if what != "lane" else "it is shown in Slack"
        return [CatalogError(
            *where,
            f"{what} name {_quoted(name)} may contain only letters, digits, '.', '_' and '-' "
            f"({why})",
        )]
    return []


def _check_lanes(
    lanes: Any, path: tuple[str | int, ...], file: str, lines: Mapping[tuple[str, ...], int]
) -> list[CatalogError]:
    if not isinstance(lanes, list):
        return []
    errors: list[CatalogError] = []
    for i, lane in enumerate(lanes):
        errors += _check_name("lane", lane, (*path, i), file, lines, LANE_MAX)
    return errors


def _check_people(
    people: Any, path: tuple[str | int, ...], file: str, lines: Mapping[tuple[str, ...], int]
) -> list[CatalogError]:
    """Owners and admins: Slack ids (readiness warns about anything else), of a length that
    fits the button values they go into."""
    items = people if isinstance(people, list) else [people]
    errors: list[CatalogError] = []
    for i, person in enumerate(items):
        if isinstance(person, str) and len(person) > OWNER_MAX:
            at = (*path, i) if isinstance(people, list) else path
            errors.append(CatalogError(
                file, _line_for(lines, at), _dotted(at),
                f"is {len(person)} characters long; a Slack user or user-group id is a few "
                f"characters (at most {OWNER_MAX})",
            ))
    return errors


def _token_errors(
    data: Any, path: tuple[str | int, ...], file: str, lines: Mapping[tuple[str, ...], int],
    seen: set[int],
) -> list[CatalogError]:
    """A published token format anywhere in the file (a description, a note, a header name):
    the catalog is shown to anyone by `/rotate map`, so it never holds one."""
    if id(data) in seen:
        return []
    errors: list[CatalogError] = []
    if isinstance(data, dict | list):
        seen.add(id(data))
        items = data.items() if isinstance(data, dict) else enumerate(data)
        for key, value in items:
            sub = (*path, key if isinstance(key, int) and isinstance(data, list) else str(key))
            key_shape = token_shape(key) if isinstance(key, str) else None
            if key_shape is not None:
                errors.append(_token_error(key_shape, sub, file, lines, "this key"))
            errors += _token_errors(value, sub, file, lines, seen)
    elif isinstance(data, str):
        shape = token_shape(data)
        if shape is not None:
            errors.append(_token_error(shape, path, file, lines, "this value"))
    return errors


def _token_error(
    shape: str, path: tuple[str | int, ...], file: str, lines: Mapping[tuple[str, ...], int],
    what: str,
) -> CatalogError:
    return CatalogError(
        file, _line_for(lines, path), _dotted(path),
        f"{what} has {shape} in it (not repeated here): {NEVER_HOLDS}; put the credential "
        "in the store or an environment variable and name the variable in a *_env field",
    )


def _reference_errors(
    data: dict[Any, Any], file: str, lines: Mapping[tuple[str, ...], int]
) -> list[CatalogError]:
    """What pydantic cannot see field by field: names, and references between sections."""
    errors: list[CatalogError] = []
    stores = data.get("stores") if isinstance(data.get("stores"), dict) else {}
    issuers = data.get("issuers") if isinstance(data.get("issuers"), dict) else {}
    secrets = data.get("secrets") if isinstance(data.get("secrets"), dict) else {}
    assert isinstance(stores, dict) and isinstance(issuers, dict) and isinstance(secrets, dict)
    for name in stores:
        errors += _check_name("store", name, ("stores", name), file, lines)
    for name in issuers:
        errors += _check_name("issuer", name, ("issuers", name), file, lines)
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        errors += _check_lanes(defaults.get("lanes"), ("defaults", "lanes"), file, lines)
        errors += _check_people(defaults.get("admins"), ("defaults", "admins"), file, lines)
    for sname, spec in secrets.items():
        errors += _check_name("secret", sname, ("secrets", sname), file, lines)
        if not isinstance(spec, dict):
            continue
        errors += _check_lanes(spec.get("lanes"), ("secrets", sname, "lanes"), file, lines)
        errors += _check_people(spec.get("admins"), ("secrets", sname, "admins"), file, lines)
        consumers = spec.get("consumers")
        if isinstance(consumers, dict):
            for cname, consumer in consumers.items():
                cpath: tuple[str | int, ...] = ("secrets", sname, "consumers", cname)
                errors += _check_name("consumer", cname, cpath, file, lines)
                if isinstance(consumer, dict):
                    errors += _check_name(
                        "lane", consumer.get("lane"), (*cpath, "lane"), file, lines, LANE_MAX
                    )
                    errors += _check_people(consumer.get("owner"), (*cpath, "owner"), file, lines)
        errors += _target_errors(data, sname, spec, stores, file, lines)
        store = spec.get("store")
        if isinstance(store, dict) and isinstance(store.get("name"), str):
            path: tuple[str | int, ...] = ("secrets", sname, "store", "name")
            if store["name"] not in stores:
                errors.append(CatalogError(
                    file, _line_for(lines, path), _dotted(path),
                    _undefined("store", store["name"], stores),
                ))
        issuer = spec.get("issuer")
        if (
            isinstance(issuer, dict)
            and "kind" not in issuer
            and isinstance(issuer.get("name"), str)
        ):
            path = ("secrets", sname, "issuer", "name")
            if issuer["name"] not in issuers:
                errors.append(CatalogError(
                    file, _line_for(lines, path), _dotted(path),
                    _undefined("issuer", issuer["name"], issuers),
                ))
            else:
                errors += _issuer_param_errors(
                    issuers[issuer["name"]], issuer, ("secrets", sname, "issuer"), file, lines
                )
    errors += _group_errors(data.get("groups"), secrets, file, lines)
    return errors


def _group_errors(
    groups: Any, secrets: dict[Any, Any], file: str, lines: Mapping[tuple[str, ...], int]
) -> list[CatalogError]:
    """`groups:` name secrets that exist, each once per group; a secret is in at most one
    exclusive group and one group with an offset (two would give it two partners' rules to
    satisfy, and which rotation waits for which could deadlock or never settle)."""
    if not isinstance(groups, dict):
        return []
    errors: list[CatalogError] = []
    exclusive_in: dict[str, str] = {}
    offset_in: dict[str, str] = {}
    for gname, spec in groups.items():
        errors += _check_name("group", gname, ("groups", gname), file, lines)
        if not isinstance(spec, dict) or not isinstance(spec.get("secrets"), list):
            continue
        seen: set[str] = set()
        for i, sname in enumerate(spec["secrets"]):
            if not isinstance(sname, str):
                continue
            path: tuple[str | int, ...] = ("groups", gname, "secrets", i)
            where = file, _line_for(lines, path), _dotted(path)
            if sname not in secrets:
                errors.append(CatalogError(*where, _undefined("secret", sname, secrets)))
                continue
            if sname in seen:
                errors.append(CatalogError(*where, f"secret '{sname}' is listed twice"))
                continue
            seen.add(sname)
            for flag, taken, rule in (
                (spec.get("exclusive", True) is True, exclusive_in, "exclusive"),
                (spec.get("offset") is not None, offset_in, "offset"),
            ):
                if not flag:
                    continue
                if sname in taken:
                    errors.append(CatalogError(
                        *where,
                        f"secret '{sname}' is already in {rule} group '{taken[sname]}'; "
                        f"a secret may be in one {rule} group only (merge the groups)",
                    ))
                else:
                    taken[sname] = str(gname)
    return errors


def _target_errors(
    data: dict[Any, Any],
    sname: str,
    spec: dict[Any, Any],
    stores: dict[Any, Any],
    file: str,
    lines: Mapping[tuple[str, ...], int],
) -> list[CatalogError]:
    """Distribution targets: each under a lane the secret validates in, each store reference
    defined and of the target's kind."""
    errors: list[CatalogError] = []
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    lanes = spec.get("lanes") or (defaults or {}).get("lanes") or list(DEFAULT_LANES)
    consumers = spec.get("consumers") if isinstance(spec.get("consumers"), dict) else {}
    known = [str(lane) for lane in lanes] if isinstance(lanes, list) else []
    for consumer in (consumers or {}).values():
        if isinstance(consumer, dict) and isinstance(consumer.get("lane"), str):
            known.append(consumer["lane"])
    found: list[tuple[tuple[str | int, ...], Any]] = []
    targets = spec.get("targets")
    if isinstance(targets, dict):
        for lane, items in targets.items():
            lpath: tuple[str | int, ...] = ("secrets", sname, "targets", lane)
            if isinstance(lane, str) and lane not in known:
                close = difflib.get_close_matches(lane, known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                errors.append(CatalogError(
                    file, _line_for(lines, lpath), _dotted(lpath),
                    f"lane {_quoted(lane)} is not one of this secret's lanes "
                    f"({', '.join(dict.fromkeys(known))}){hint}",
                ))
            if isinstance(items, list):
                found += [((*lpath, i), t) for i, t in enumerate(items)]
    for cname, consumer in (consumers or {}).items():
        items = consumer.get("targets") if isinstance(consumer, dict) else None
        if isinstance(items, list):
            cpath: tuple[str | int, ...] = ("secrets", sname, "consumers", cname, "targets")
            found += [((*cpath, i), t) for i, t in enumerate(items)]
    for tpath, target in found:
        if not isinstance(target, dict) or target.get("kind") == "env-file":
            continue
        ref = target.get("store")
        if not isinstance(ref, str):
            continue
        spath = (*tpath, "store")
        if ref not in stores:
            errors.append(CatalogError(
                file, _line_for(lines, spath), _dotted(spath), _undefined("store", ref, stores)
            ))
        elif isinstance(stores[ref], dict) and stores[ref].get("kind") != target.get("kind"):
            errors.append(CatalogError(
                file, _line_for(lines, spath), _dotted(spath),
                f"store {_quoted(ref)} is a {stores[ref].get('kind')} store; a "
                f"{target.get('kind')} target needs a {target.get('kind')} store",
            ))
    return errors


def _undefined(what: str, name: str, defined: Mapping[Any, Any]) -> str:
    names = sorted(str(n) for n in defined)
    message = f"{what} {_quoted(name)} is not defined under {what}s"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    if names:
        return f"{message} (defined: {', '.join(names)})"
    return f"{message} (none are defined)"


def _issuer_param_errors(
    base: Any,
    ref: dict[Any, Any],
    prefix: tuple[str | int, ...],
    file: str,
    lines: Mapping[tuple[str, ...], int],
) -> list[CatalogError]:
    """Check per-secret parameters (``{name: cache, user: app}``) against the named issuer."""
    params = {k: v for k, v in ref.items() if k != "name"}
    if not params or not isinstance(base, dict) or not isinstance(base.get("kind"), str):
        return []
    try:
        _ISSUER_ADAPTER.validate_python({**base, **params})
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            field_loc = err["loc"][1:]  # after the kind tag
            # Problems of the named issuer itself are reported once, under issuers.
            if field_loc and field_loc[0] in params:
                out.append(_translate(
                    err, root_data={**base, **params}, root_type=IssuerConfig, prefix=prefix,
                    file=file, lines=lines,
                ))
        return out
    return []


# --- translating pydantic errors --------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in get_args(tp) if m is not type(None)]
    return []


def _tag_of(tp: Any) -> str | None:
    for meta in getattr(tp, "__metadata__", ()):
        if isinstance(meta, Tag):
            return meta.tag
    inner = _unwrap(tp)
    if isclass(inner) and issubclass(inner, BaseModel) and "kind" in inner.model_fields:
        ann = inner.model_fields["kind"].annotation
        if get_origin(ann) is Literal:
            return str(get_args(ann)[0])
    return None


def _field_type(model: type[BaseModel], key: Any) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _type_at(root: Any, loc: Sequence[Any]) -> Any:
    """Follow a pydantic error location through the model types (tags pick union members)."""
    tp = root
    for el in loc:
        members = _union_members(tp)
        while len(members) == 1:
            tp, members = members[0], _union_members(members[0])
        if members:
            tp = next((m for m in members if _tag_of(m) == el), None)
        else:
            inner = _unwrap(tp)
            if isclass(inner) and issubclass(inner, BaseModel):
                tp = _field_type(inner, el)
            elif get_origin(inner) is dict:
                tp = get_args(inner)[1]
            elif get_origin(inner) in (list, tuple):
                tp = get_args(inner)[0]
            else:
                tp = None
        if tp is None:
            return None
    return tp


def _model_at(root: Any, loc: Sequence[Any]) -> type[BaseModel] | None:
    tp = _type_at(root, loc)
    members = _union_members(tp)
    if len(members) == 1:
        tp = members[0]
    inner = _unwrap(tp)
    return inner if isclass(inner) and issubclass(inner, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _data_path(loc: Sequence[Any], data: Any, *, named_last: bool) -> list[str | int]:
    """The part of ``loc`` that exists in the data (dropping union tags), plus the final
    element when it names a missing field (``named_last``)."""
    path: list[str | int] = []
    cur = data
    for i, el in enumerate(loc):
        if isinstance(cur, dict) and el in cur:
            path.append(str(el))
            cur = cur[el]
        elif isinstance(cur, list) and isinstance(el, int) and 0 <= el < len(cur):
            path.append(el)
            cur = cur[el]
        elif named_last and i == len(loc) - 1:
            path.append(str(el))
    return path


def _expected_list(expected: str) -> str:
    items = [s.strip().strip("'") for s in re.split(r", | or ", expected)]
    return ", ".join(items)


def _unknown_field(model: type[BaseModel] | None, key: str) -> str:
    fields = _field_names(model) if model is not None else []
    if f"{key}_env" in fields:
        return (
            f"unknown field '{key}': the catalog never holds credentials; put the value in an "
            f"environment variable and give its name as {key}_env"
        )
    if _CREDENTIAL_KEY.search(key):
        envs = [f for f in fields if f.endswith("_env")]
        how = " or ".join(envs) if envs else "a *_env field"
        return (
            f"unknown field '{key}': the catalog never holds credentials; keep them in "
            f"environment variables and name those with {how}"
        )
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"unknown field {_quoted(key)} (did you mean '{close[0]}'?)"
    if fields:
        return f"unknown field {_quoted(key)} (expected one of: {', '.join(fields)})"
    return f"unknown field {_quoted(key)}"


def _translate(
    err: Any,
    *,
    root_data: Any,
    root_type: Any,
    prefix: tuple[str | int, ...],
    file: str,
    lines: Mapping[tuple[str, ...], int],
) -> CatalogError:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    named_last = kind == "missing"
    path: list[str | int] = [*prefix, *_data_path(loc, root_data, named_last=named_last)]
    message: str

    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        message = _unknown_field(_model_at(root_type, loc[:-1]), str(loc[-1]))
    elif kind == "literal_error":
        if path == ["version"]:
            message = f"unsupported catalog version {_shown(value)}; this rotabot reads version: 1"
        else:
            message = f"expected one of {_expected_list(ctx['expected'])}, got {_shown(value)}"
    elif kind == "union_tag_invalid":
        path.append("kind")
        expected = _expected_list(ctx["expected_tags"])
        message = f"expected one of {expected}, got {_shown(ctx.get('tag'))}"
    elif kind == "union_tag_not_found":
        path.append("kind")
        tags = [t for t in map(_tag_of, _union_members(_type_at(root_type, loc))) if t]
        message = "required field is missing" + (f" (one of {', '.join(tags)})" if tags else "")
    elif kind == "string_type":
        message = f"expected text, got {_describe(value)}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = f"expected a whole number, got {_describe(value)}"
    elif kind in ("bool_type", "bool_parsing"):
        message = f"expected true or false, got {_describe(value)}"
    elif kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        message = f"expected a mapping (key: value), got {_describe(value)}"
    elif kind in ("list_type", "tuple_type"):
        message = f"expected a list, got {_describe(value)}"
    elif kind == "greater_than_equal":
        message = f"expected at least {ctx['ge']}, got {_shown(value)}"
    elif kind == "less_than_equal":
        message = f"expected at most {ctx['le']}, got {_shown(value)}"
    elif kind == "issuer_form":
        message = str(err["msg"])
    elif isinstance(err.get("msg"), str) and kind in (
        "duration", "env_name", "env_name_credential", "url", "url_credential",
        "key_id_placeholder", "lanes", "vault_login", "vault_path", "store_path",
        "body_credential",
    ):
        message = err["msg"]
    else:
        text = str(err.get("msg", kind))
        message = text[:1].lower() + text[1:]
    return CatalogError(file, _line_for(lines, path), _dotted(path), message)
