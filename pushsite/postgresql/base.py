"""Django's PostgreSQL backend, healing killed connections without sleeping (issue 15).

With ``CONN_HEALTH_CHECKS``, Django hands psycopg_pool a ``check`` callback, and
the pool's ``getconn`` answers a failed check by *sleeping* with exponential
back-off (1 s, then 2 s, ...) before it tries the next pooled connection. When
PostgreSQL backends are killed (``pg_terminate_backend``, a failover, a proxy
restart) every pooled connection is dead at once: requests slept through the
pool's whole timeout and publishes answered 503 for seconds although the
database accepted connections. Here the pool has no ``check``; the checkout
checks the connection itself and, when it is dead, discards it (the pool
opens a replacement at once) and takes the next, without sleeping.

A connection can also die while a request holds it, between two statements.
Then the statement that finds it dead is run again, once, on a fresh
connection, when that cannot do anything twice: a ``SELECT`` outside a
transaction, or the first statement of a transaction (nothing was committed:
the transaction had not got further than that statement). Anything later in a
transaction, a commit included, fails as before (503): only the caller can
tell whether to try again.
"""

from __future__ import annotations

import logging
import select
from contextlib import suppress
from typing import Any

import psycopg
from django.db import OperationalError
from django.db.backends import utils
from django.db.backends.postgresql import base
from psycopg.adapt import AdaptersMap
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)


class DatabaseWrapper(base.DatabaseWrapper):
    # Statements sent since the current transaction began (or autocommit was set).
    statements_in_transaction = 0

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        context = params.get("context")
        if context is not None:
            # ``json`` columns (events.models.PublishedJSONField) read as text, as Django
            # has ``jsonb`` read, for JSONField.from_db_value to parse. A copy: Django's
            # adapters template is shared and cached.
            context = AdaptersMap(context)
            context.register_loader("json", TextLoader)
            params["context"] = context
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        pool = self.pool
        if pool is None:
            return connection
        # Every pooled connection may be dead, plus the one the pool opens now.
        for _ in range(pool.max_size + 1):
            try:
                ConnectionPool.check_connection(connection)
            except psycopg.Error as exc:
                logger.info("Discarding a dead pooled database connection: %s", exc)
                connection.close()
                # Closed, so the pool drops it and opens a replacement in the background.
                pool.putconn(connection)
                connection = super().get_new_connection(conn_params)
            else:
                return connection
        ConnectionPool.check_connection(connection)
        return connection

    def discard_if_closed_by_server(self) -> None:
        """Drop a kept idle connection the server has closed (or written to), without a round trip.

        An idle connection has nothing to read: a readable socket means the backend
        sent its last words (terminated, timed out) or the peer closed it. Used by
        the publish threads (events/publish/writers.py), which keep a connection
        between publishes and store each in one autocommit statement that is not
        run again on a dead connection.
        """
        connection = self.connection
        if connection is None:
            return
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):
            readable = [True]
        if readable:
            logger.info("Discarding a kept database connection the server closed.")
            with suppress(Exception):
                connection.close()
            self.close()

    def _set_autocommit(self, autocommit: bool) -> None:
        super()._set_autocommit(autocommit)  # type: ignore[misc]  # not in django-stubs
        self.statements_in_transaction = 0

    def may_retry(self, sql: str, error: OperationalError) -> bool:
        """Whether ``sql`` failed on a dead connection and can safely run again on a fresh one."""
        connection = self.connection
        cause = error.__cause__
        dead = connection is not None and (
            connection.closed or isinstance(cause, psycopg.errors.AdminShutdown)
        )
        if not dead or self.pool is None:
            return False
        if self.autocommit:
            return sql.lstrip()[:6].upper() == "SELECT"
        return self.in_atomic_block and not self.savepoint_ids and self.statements_in_transaction == 1

    def replace_dead_connection(self) -> None:
        """Swap the dead connection for a fresh one in the same state (autocommit or a new transaction)."""
        dead = self.connection
        autocommit = self.autocommit
        with suppress(Exception):
            dead.close()
        assert self.pool is not None
        self.pool.putconn(dead)
        self.connection = self.get_new_connection(self.get_connection_params())
        self.connection.autocommit = autocommit
        self.errors_occurred = False

    def make_cursor(self, cursor: Any) -> utils.CursorWrapper:
        return RetryingCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> utils.CursorDebugWrapper:
        return RetryingCursorDebugWrapper(cursor, self)


class RetryOnDeadConnection:
    """``_execute`` that runs a statement again, once, when its connection was found dead."""

    db: DatabaseWrapper
    cursor: Any

    def _execute(self, sql: str, params: Any, *ignored_wrapper_args: Any) -> Any:
        self.db.statements_in_transaction += 1
        try:
            return super()._execute(sql, params, *ignored_wrapper_args)  # type: ignore[misc]
        except OperationalError as error:
            # A named (server-side) cursor lives on its connection: never moved.
            if getattr(self.cursor, "name", None) or not self.db.may_retry(sql, error):
                raise
            logger.info("Database connection found dead; running the statement again on a fresh one.")
        self.db.replace_dead_connection()
        self.cursor = self.db.create_cursor()
        self.db.statements_in_transaction = 1
        return super()._execute(sql, params, *ignored_wrapper_args)  # type: ignore[misc]


class RetryingCursorWrapper(RetryOnDeadConnection, utils.CursorWrapper):
    pass


class RetryingCursorDebugWrapper(RetryOnDeadConnection, utils.CursorDebugWrapper):
    pass
