"""Plain statements for the hot path of a refresh, each compiled once per process.

Django's ORM builds and compiles a query on every call: a few hundred microseconds of CPU that a
heartbeat sweep pays thousands of times over for three statements whose shape never changes. These
helpers say the same thing as the ORM (the SQL comes from the ORM's own compiler, values from each
field's own ``get_db_prep_save`` and converters) and only skip recompiling it:

* :func:`row_locked` is ``Model.objects.select_for_update(of=("self",)).get(pk=pk)``;
* :func:`row_store` is ``instance.save(update_fields=fields)``, signals included (the
  notifications of :mod:`oauth.notifications` hear of every transition as before);
* :func:`audit_batch` keeps the audit events of a block of work (and the plain bookkeeping
  statements it asks for) and writes them together in one round trip when the block ends, raising
  or not: a heartbeat's two events and its probe time cost one statement, not three.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any

from django.db import DatabaseError, connection
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from psycopg.pq import TransactionStatus

from .models import AuditEvent


_IDLE = TransactionStatus.IDLE


# --- the locked read ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _locked_select(model) -> tuple[str, list[str], list[tuple[int, list, Any]]]:
    """The SQL of a locked read by primary key, the attribute names it fills and its converters."""
    compiler = (
        model._default_manager.select_for_update(of=("self",)).filter(pk=0).query
        .get_compiler(using="default")
    )
    sql, _ = compiler.as_sql()  # compiled inside the caller's transaction (FOR UPDATE needs one)
    columns = [col for col, _, _ in compiler.select]
    names = [col.target.attname for col in columns]
    converters = [
        (position, convs, expression)
        for position, (convs, expression) in compiler.get_converters(columns).items()
    ]
    return sql, names, converters


def _own_transaction() -> bool:
    """Whether the block running now is one outermost ``transaction.atomic()`` on PostgreSQL (not
    a savepoint, not inside a caller's transaction): its BEGIN and COMMIT are then ours to send.
    (Inside a caller's ``set_autocommit(False)``, Django makes the block a savepoint too.)"""
    return (
        connection.vendor == "postgresql"
        and len(connection.atomic_blocks) == 1
        and not connection.savepoint_ids
        and not connection.needs_rollback
    )


def row_locked(model, pk: int):
    """The row ``pk`` of ``model``, locked until the transaction ends; ``model.DoesNotExist`` if
    it is gone. Must run inside ``transaction.atomic()``.

    At the start of an outermost transaction on PostgreSQL, the BEGIN goes in the same round trip
    as the read (psycopg would otherwise send it alone first, and wait for its answer): the
    driver is told not to begin one itself (its autocommit, which Django's bookkeeping does not
    read), and the server is in the transaction from the BEGIN on; Django's commit or rollback at
    the end of the block ends it as usual.
    """
    sql, names, converters = _locked_select(model)
    connection.ensure_connection()
    raw = connection.connection
    begin = _own_transaction() and not raw.autocommit and raw.info.transaction_status == _IDLE
    if begin:
        raw.autocommit = True  # (allowed while idle; Django sets it back when the block ends)
        sql = "BEGIN; " + sql
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        if begin:
            cursor.nextset()  # past the BEGIN's result, to the row's
        row = cursor.fetchone()
    if row is None:
        raise model.DoesNotExist(f"{model.__name__} matching query does not exist.")
    values = list(row)
    for position, convs, expression in converters:
        value = values[position]
        for convert in convs:
            value = convert(value, expression, connection)
        values[position] = value
    return model.from_db("default", names, values)


# --- the field update ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def update_sql(model, fields: tuple[str, ...]) -> tuple[str, list]:
    """``UPDATE <table> SET <field> = %s, ... WHERE <pk> = %s`` and the fields, in that order."""
    meta = model._meta
    quote = connection.ops.quote_name
    concrete = [meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in concrete)
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s",
        concrete,
    )


def row_store(instance, fields, *, last: bool = False) -> None:
    """``instance.save(update_fields=fields)`` in one UPDATE compiled once per set of fields.

    ``last``: nothing else is written in this transaction. When it is an outermost one on
    PostgreSQL, its COMMIT is sent with the UPDATE (one round trip, and the row lock released as
    soon as the write is durable); Django's commit at the end of the block then finds the
    transaction ended and sends nothing, and its ``on_commit`` callbacks run as usual.
    """
    model = type(instance)
    names = tuple(dict.fromkeys(fields))
    sql, concrete = update_sql(model, names)
    if last and _own_transaction():
        sql += "; COMMIT"
    pre_save.send(sender=model, instance=instance, raw=False, using="default",
                  update_fields=frozenset(names))
    values = [field.get_db_prep_save(field.pre_save(instance, False), connection)
              for field in concrete]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, instance.pk])
        if cursor.rowcount == 0:
            raise DatabaseError("Save with update_fields did not affect any rows.")
    post_save.send(sender=model, instance=instance, created=False, update_fields=frozenset(names),
                   raw=False, using="default")


# --- audit events, written together ---------------------------------------------------------------------
_AUDIT_COLUMNS = ("action", "credential_id", "credential_key", "account", "actor", "outcome",
                  "detail", "created_at")
_batches = threading.local()


class AuditBatch:
    """The audit events and bookkeeping statements of one block of work, not yet written."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.statements: list[tuple[str, list]] = []

    def add(self, event: AuditEvent) -> AuditEvent:
        event.created_at = timezone.now()  # when it happened, not when the batch is written
        self.events.append(event)
        return event

    def also(self, sql: str, params: list) -> None:
        """A plain statement (no result) to send in the same round trip as the events."""
        self.statements.append((sql, list(params)))

    def flush(self) -> None:
        if not self.events and not self.statements:
            return
        parts, params = [sql for sql, _ in self.statements], []
        for _, values in self.statements:
            params += values
        if self.events:
            parts.append(_insert_sql(len(self.events)))
            detail = AuditEvent._meta.get_field("detail")
            for event in self.events:
                params += [event.action, event.credential_id, event.credential_key, event.account,
                           event.actor, event.outcome,
                           detail.get_db_prep_save(event.detail, connection), event.created_at]
        self.events, self.statements = [], []
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # One round trip; outside a transaction PostgreSQL runs the statements as one.
                cursor.execute("; ".join(parts), params)
                return
            for sql in parts:  # SQLite (the embedded default) takes one statement at a time
                count = sql.count("%s")
                cursor.execute(sql, params[:count])
                params = params[count:]


@functools.lru_cache(maxsize=16)
def _insert_sql(count: int) -> str:
    quote = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(_AUDIT_COLUMNS)) + ")"
    return (
        f"INSERT INTO {quote(AuditEvent._meta.db_table)} "
        f"({', '.join(quote(name) for name in _AUDIT_COLUMNS)}) VALUES {', '.join([row] * count)}"
    )


def audit_batch_current() -> AuditBatch | None:
    """The batch this thread is collecting into, if any (:func:`oauth.services.audit_record`)."""
    return getattr(_batches, "current", None)


@contextlib.contextmanager
def audit_batch():
    """Within the block, this thread's audit events are collected and written in one statement
    when it ends, whether it returns or raises (a nested block joins the outer one)."""
    current = audit_batch_current()
    if current is not None:
        yield current
        return
    batch = _batches.current = AuditBatch()
    try:
        yield batch
    finally:
        _batches.current = None
        batch.flush()


__all__ = ["AuditBatch", "audit_batch", "audit_batch_current", "row_locked", "row_store", "update_sql"]
