"""Many rows in one statement, without the ORM's per-value overhead (the fan-out's hot path).

Django's ``bulk_update`` builds a ``CASE WHEN id = … THEN …`` expression per field and row, and
``bulk_create`` prepares every value through several layers of field methods; at a few hundred
rows that costs most of a fan-out batch in Python (measured: ``bulk_update`` alone took 0.8 s of
1.1 s for 125 subscribers). On PostgreSQL these helpers write ``UPDATE … FROM (VALUES …)`` and
``INSERT … ON CONFLICT`` with psycopg2's ``execute_values`` and values psycopg2 adapts itself;
elsewhere (SQLite, in process and cheap already) they fall back to the ORM.

A value every row shares (the batch's execution, symbol, time, status) is written once in the
statement instead of once per row: a fan-out batch's rows differ in a few columns only, and
adapting, sending and parsing the same value a thousand times cost more than the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models import F

M = TypeVar("M", bound=models.Model)


def bulk_fast() -> bool:
    """Whether these helpers write through ``execute_values`` (PostgreSQL), not the ORM."""
    return connection.vendor == "postgresql"


def _adapter(field: models.Field) -> Any:
    """A function turning the attribute into what psycopg2 can send as is."""
    if isinstance(field, models.JSONField):
        from psycopg2.extras import Json

        encoder = field.encoder

        def as_json(value: Any) -> Any:
            return None if value is None else Json(value, dumps=_dumps(encoder))

        return as_json
    return None


def _dumps(encoder: Any) -> Any:
    import json

    return lambda value: json.dumps(value, cls=encoder)


def _values(objs: Sequence[models.Model], fields: Sequence[models.Field], add: bool) -> list:
    """The objects' values of ``fields``, as the ORM would save them (not adapted yet)."""
    if add:
        return [[field.pre_save(obj, add) for field in fields] for obj in objs]
    return [[getattr(obj, field.attname) for field in fields] for obj in objs]


@dataclass(frozen=True)
class _Columns:
    """Columns split into those sent per row (``VALUES``) and those every row shares, each
    written once in the statement as a literal."""

    per_row: list[models.Field]
    shared: dict[str, str]  # column -> the SQL of its value, cast to the column's type
    rows: list[list[Any]]  # the per-row values, adapted


def _split(fields: Sequence[models.Field], rows: Sequence[Sequence[Any]]) -> _Columns:
    """Split ``fields`` (and the rows' values of them) into per-row and shared columns.

    A column is shared when every row holds the same value of the same type. The first
    column is always sent per row: ``VALUES`` needs one, and it keeps one row one row."""
    count = len(fields)
    same = [i > 0 and len(rows) > 1 and _all_same([r[i] for r in rows]) for i in range(count)]
    adapters = [_adapter(f) for f in fields]
    keep = [i for i in range(count) if not same[i]]
    shared = {}
    for i in range(count):
        if same[i]:
            value, adapt = rows[0][i], adapters[i]
            shared[_col(fields[i])] = (
                f"{_literal(adapt(value) if adapt else value)}::{_cast(fields[i])}"
            )
    per_row = [[adapters[i](row[i]) if adapters[i] else row[i] for i in keep] for row in rows]
    return _Columns(per_row=[fields[i] for i in keep], shared=shared, rows=per_row)


def _all_same(column: list[Any]) -> bool:
    """Every value equal to the first, and of its type (``1 == True == Decimal(1)``)."""
    first = column[0]
    return column.count(first) == len(column) and set(map(type, column)) == {type(first)}


def _literal(value: Any) -> str:
    """``value`` as an SQL literal, escaped for the statement ``execute_values`` formats."""
    with connection.cursor() as cursor:
        return cursor.cursor.mogrify("%s", [value]).decode().replace("%", "%%")


def _cast(field: models.Field) -> str:
    """The column's type for a cast, strings without their length: an explicit cast to
    ``varchar(n)`` would cut a longer value silently, where the column refuses it."""
    cast = field.cast_db_type(connection)
    assert cast is not None
    return "varchar" if cast.startswith("varchar(") else cast


def _select(columns: _Columns, order: Sequence[models.Field]) -> str:
    """``SELECT`` of ``order``'s columns from ``v`` (the per-row values) and the shared ones."""
    quote = connection.ops.quote_name
    return ", ".join(
        columns.shared.get(_col(f)) or f"v.{quote(_col(f))}::{_cast(f)}" for f in order
    )


def _values_as(columns: _Columns, *extra: str) -> str:
    quote = connection.ops.quote_name
    return ", ".join([*(quote(_col(f)) for f in columns.per_row), *(quote(e) for e in extra)])


def _insert_sql(meta: Any, fields: Sequence[models.Field], columns: _Columns) -> str:
    quote = connection.ops.quote_name
    names = ", ".join(quote(_col(f)) for f in fields)
    return (
        f"INSERT INTO {quote(meta.db_table)} ({names}) SELECT {_select(columns, fields)} "
        f"FROM (VALUES %s) AS v({_values_as(columns)})"
    )


def bulk_write(
    objs: Sequence[models.Model], fields: Sequence[str], *, key: str | None = None
) -> int:
    """UPDATE ``fields`` of every object (one model) from its attributes; returns the rows.

    ``key``: a unique field the rows are matched on instead of the primary key (objects
    built from what the caller knows, their primary keys never read)."""
    if not objs:
        return 0
    model = type(objs[0])
    meta = model._meta
    pk = _field(meta, key) if key else meta.pk
    assert pk is not None and (key is None or pk.unique)
    if not bulk_fast():
        if key is None:
            return model._default_manager.bulk_update(objs, list(fields))
        for obj in objs:
            model._default_manager.filter(**{pk.attname: getattr(obj, pk.attname)}).update(
                **{name: getattr(obj, _field(meta, name).attname) for name in fields}
            )
        return len(objs)
    concrete = [_field(meta, name) for name in fields]
    columns = _split(concrete, _values(objs, concrete, False))
    # Each row's key goes last, always per row: it is ``v.__pk``.
    for row, obj in zip(columns.rows, objs, strict=True):
        row.append(getattr(obj, pk.attname))
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    assignments = ", ".join(
        f"{quote(_col(f))} = {columns.shared.get(_col(f)) or f'v.{quote(_col(f))}::{_cast(f)}'}"
        for f in concrete
    )
    sql = (
        f"UPDATE {table} SET {assignments} FROM (VALUES %s) AS v({_values_as(columns, '__pk')}) "
        f"WHERE {table}.{quote(_col(pk))} = v.{quote('__pk')}::{_cast(pk)}"
    )
    _execute_values(sql, columns.rows)
    return len(columns.rows)


def bulk_add(
    model: type[models.Model], fields: Sequence[str], rows: Mapping[Any, Sequence[Any]]
) -> int:
    """Add ``rows[pk]`` to ``fields`` of each row, in the database (``field = field + value``,
    so concurrent additions are kept); returns the rows.

    One ``UPDATE … FROM (VALUES …)`` on PostgreSQL: a ``CASE WHEN id = …`` per row would cost
    the database a comparison per row and branch, quadratic in the batch.
    """
    if not rows:
        return 0
    meta = model._meta
    concrete = [_field(meta, name) for name in fields]
    if not bulk_fast():
        for pk, values in rows.items():
            model._default_manager.filter(pk=pk).update(
                **{f.name: F(f.name) + v for f, v in zip(concrete, values, strict=True)}
            )
        return len(rows)
    pk = meta.pk
    assert pk is not None
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    assignments = ", ".join(
        f"{quote(_col(f))} = {table}.{quote(_col(f))} + v.{quote(_col(f))}::"
        f"{f.cast_db_type(connection)}"
        for f in concrete
    )
    names = ", ".join([*(quote(_col(f)) for f in concrete), quote("__pk")])
    sql = (
        f"UPDATE {table} SET {assignments} FROM (VALUES %s) AS v({names}) "
        f"WHERE {table}.{quote(_col(pk))} = v.{quote('__pk')}::{pk.cast_db_type(connection)}"
    )
    _execute_values(sql, [[*values, key] for key, values in rows.items()])
    return len(rows)


def bulk_insert(
    objs: Sequence[models.Model],
    *,
    conflict: Sequence[str] | None = None,
    update: Sequence[str] = (),
) -> None:
    """INSERT the objects; on a conflict on ``conflict`` (the unique fields), UPDATE ``update``
    (or, without ``update``, leave the existing row alone: ``ON CONFLICT DO NOTHING``)."""
    if not objs:
        return
    model = type(objs[0])
    if not bulk_fast():
        if update:
            model._default_manager.bulk_create(
                objs, update_conflicts=True, unique_fields=conflict, update_fields=update
            )
        else:
            model._default_manager.bulk_create(objs, ignore_conflicts=True)
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = _split(fields, _values(objs, fields, True))
    sql = f"{_insert_sql(meta, fields, columns)} ON CONFLICT"
    if update:
        assert conflict, "an upsert needs its unique fields"
        targets = ", ".join(quote(_col(_field(meta, name))) for name in conflict)
        sets = ", ".join(
            f"{quote(c)} = EXCLUDED.{quote(c)}" for c in (_col(_field(meta, n)) for n in update)
        )
        sql += f" ({targets}) DO UPDATE SET {sets}"
    else:
        sql += " DO NOTHING"
    _execute_values(sql, columns.rows)


def bulk_insert_values(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT plain rows (values of ``fields``, in that order): no model instance is built,
    for rows that are only written (the other columns take their database defaults)."""
    if not rows:
        return
    meta = model._meta
    concrete = [_field(meta, name) for name in fields]
    if not bulk_fast():
        model._default_manager.bulk_create(
            [model(**{f.attname: v for f, v in zip(concrete, row, strict=True)}) for row in rows]
        )
        return
    columns = _split(concrete, rows)
    _execute_values(_insert_sql(meta, concrete, columns), columns.rows)


def bulk_insert_values_new(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]], *, key: str
) -> set[Any]:
    """INSERT plain rows (as ``bulk_insert_values``), leaving rows that exist alone; returns
    the ``key`` (a unique field among ``fields``) of the rows inserted."""
    if not rows:
        return set()
    meta = model._meta
    concrete = [_field(meta, name) for name in fields]
    unique = _field(meta, key)
    assert unique.unique and unique in concrete
    if not bulk_fast():
        at = concrete.index(unique)
        known = set(
            model._default_manager.filter(
                **{f"{unique.attname}__in": [row[at] for row in rows]}
            ).values_list(unique.attname, flat=True)
        )
        fresh = [row for row in rows if row[at] not in known]
        bulk_insert_values(model, fields, fresh)
        return {row[at] for row in fresh}
    columns = _split(concrete, rows)
    quote = connection.ops.quote_name
    sql = (
        f"{_insert_sql(meta, concrete, columns)} ON CONFLICT DO NOTHING "
        f"RETURNING {quote(_col(unique))}"
    )
    return {k for (k,) in _execute_values(sql, columns.rows, fetch=True)}


def bulk_insert_new(objs: Sequence[M], *, key: str) -> list[M]:
    """INSERT the objects, leaving rows that exist alone; returns the objects inserted, their
    primary keys set, so the caller need not read back what it just wrote (``key``: a unique
    field telling the objects apart). On SQLite it returns none: the caller reads them all.
    """
    if not objs:
        return []
    if not bulk_fast():
        bulk_insert(objs)
        return []
    meta = type(objs[0])._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    pk, unique = meta.pk, _field(meta, key)
    assert pk is not None and unique.unique
    columns = _split(fields, _values(objs, fields, True))
    sql = (
        f"{_insert_sql(meta, fields, columns)} ON CONFLICT DO NOTHING "
        f"RETURNING {quote(_col(pk))}, {quote(_col(unique))}"
    )
    ids = dict((k, v) for v, k in _execute_values(sql, columns.rows, fetch=True))
    decimals = [f for f in fields if isinstance(f, models.DecimalField)]
    inserted = []
    for obj in objs:
        value = getattr(obj, unique.attname)
        if value in ids:
            obj.pk = ids[value]
            obj._state.adding, obj._state.db = False, connection.alias
            _as_stored(obj, decimals)
            inserted.append(obj)
    return inserted


def _as_stored(obj: models.Model, decimals: Sequence[models.DecimalField]) -> None:
    """Decimals as the database stored them (rounded to the column's scale, half away from
    zero like PostgreSQL's numeric), so the object equals the row read back."""
    for field in decimals:
        value = getattr(obj, field.attname)
        if isinstance(value, Decimal) and field.decimal_places is not None and value.is_finite():
            step = Decimal(1).scaleb(-field.decimal_places)
            # The column's digits, not the default context's 28: the row holds them already.
            context = Context(prec=max(28, (field.max_digits or 0) + 1))
            setattr(obj, field.attname, value.quantize(step, ROUND_HALF_UP, context))


def _col(field: models.Field) -> str:
    assert field.column is not None
    return field.column


def _field(meta: Any, name: str) -> models.Field:
    field = meta.get_field(name)
    assert isinstance(field, models.Field) and field.column
    return field


def _execute_values(sql: str, rows: list, *, fetch: bool = False) -> list:
    from psycopg2.extras import execute_values

    with connection.cursor() as cursor:
        return execute_values(cursor.cursor, sql, rows, page_size=max(1, len(rows)), fetch=fetch)
