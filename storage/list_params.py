"""A list bound as ONE parameter, so a statement's text is the same whatever the list's length.

``column.in_([...])`` renders one placeholder per item: every batch size is a new statement for
SQLAlchemy to render and, on PostgreSQL, for psycopg to parse (its statement cache is keyed on
the text) and never one it prepares. A group commit's batches vary in size all the time. Here
PostgreSQL takes an array (``= ANY(:list)``, ``unnest(:list)``) and SQLite a JSON array read
with ``json_each``; the statements are built once per dialect and reused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    String,
    any_,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

POSTGRESQL = "postgresql"


def list_table(dialect: str, name: str) -> FromClause:
    """The list of strings bound as ``name``, as a one-column table whose column is
    ``value``."""
    if dialect == POSTGRESQL:
        return func.unnest(bindparam(name, type_=ARRAY(String()))
                           ).table_valued("value").render_derived()
    return func.json_each(bindparam(name, type_=String())).table_valued("value")


def in_list(dialect: str, col: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``col`` is one of the list bound as ``name``."""
    if dialect == POSTGRESQL:
        return col == any_(bindparam(name, type_=ARRAY(col.type)))
    return col.in_(select(list_table(dialect, name).c.value))


def list_value(dialect: str, items: Iterable[Any]) -> Any:
    """What to bind for a list parameter of ``in_list`` or ``list_table``."""
    return list(items) if dialect == POSTGRESQL else json.dumps(list(items))


def pairs_table(dialect: str, name: str) -> FromClause:
    """Pairs of strings bound as ``name`` (``pairs_value``), as a table of columns a and b."""
    if dialect == POSTGRESQL:
        text_array = ARRAY(String())
        return func.unnest(bindparam(f"{name}_a", type_=text_array),
                           bindparam(f"{name}_b", type_=text_array)
                           ).table_valued("a", "b").render_derived()
    each = list_table(dialect, name)
    return select(func.json_extract(each.c.value, "$[0]").label("a"),
                  func.json_extract(each.c.value, "$[1]").label("b")).subquery()


def pairs_value(dialect: str, name: str, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The parameters that bind ``pairs`` for ``pairs_table(dialect, name)``."""
    listed = list(pairs)
    if dialect == POSTGRESQL:
        return {f"{name}_a": [a for a, _ in listed], f"{name}_b": [b for _, b in listed]}
    return {name: json.dumps(listed)}


def counts_table(dialect: str, name: str) -> FromClause:
    """An {id: number} mapping bound as ``name`` (``counts_value``), as a table of text
    columns k and n (not json_each's own names: its ``id`` would shadow a table's)."""
    if dialect == POSTGRESQL:
        each = func.jsonb_each_text(cast(bindparam(name, type_=String()), JSONB)
                                    ).table_valued("key", "value")
    else:
        each = func.json_each(bindparam(name, type_=String())).table_valued("key", "value")
    return select(each.c.key.label("k"), each.c.value.label("n")).subquery()


def counts_value(counts: Mapping[int, int]) -> str:
    return json.dumps({str(k): v for k, v in counts.items()})
