"""Keeps the database's planner statistics in step with the data.

Search queries pick their driving index from these statistics: without them SQLite scans every
resource of a type instead of the few rows an index condition names. PostgreSQL's autovacuum
analyses on its own, but only a minute or more after a bulk load; SQLite never does. So the
store re-analyses whenever the number of writes since the last run reaches the number of rows
seen then (the data has roughly doubled), in the background, one run at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine, func, select, text

from fhir_server.store.models import resource_versions

log = logging.getLogger("interop.store")
FIRST_RUN_AFTER = 1_000


class PlannerStatistics:
    def __init__(
        self,
        engine: Engine,
        write_connection: Callable[[], AbstractContextManager[Connection]],
        first_run_after: int = FIRST_RUN_AFTER,
    ) -> None:
        self.engine = engine
        self.write_connection = write_connection
        self.first_run_after = first_run_after
        self.runs = 0
        self._lock = threading.Lock()
        self._running = False
        self._writes = 0
        self._next_run = first_run_after

    def analyze(self) -> None:
        """ANALYZE now (SQLite samples with `analysis_limit`, set per connection)."""
        count = select(func.count()).select_from(resource_versions)
        if self.engine.dialect.name == "sqlite":
            with self.write_connection() as conn:  # ANALYZE writes SQLite's statistics tables
                rows = conn.execute(count).scalar_one()
                conn.execute(text("ANALYZE"))
        else:
            # Outside a transaction block PostgreSQL analyses each table in a transaction of its
            # own, so no lock is held across tables (one long transaction could deadlock with
            # DDL such as TRUNCATE that locks the same tables in another order).
            with self.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                rows = conn.execute(count).scalar_one()
                timeout = conn.execute(text("SHOW statement_timeout")).scalar_one()
                conn.execute(text("SET statement_timeout = 0"))  # ANALYZE may take long
                try:
                    conn.execute(text("ANALYZE"))
                finally:
                    conn.execute(
                        text("SELECT set_config('statement_timeout', :t, false)"), {"t": timeout}
                    )
        with self._lock:
            self._writes = 0
            self._next_run = max(self.first_run_after, rows)
            self.runs += 1

    def refresh_in_background(self) -> None:
        """At start-up: the database may have grown while this process was not watching."""
        self.record_writes(self._next_run)

    def record_writes(self, count: int) -> None:
        """A Store listener: called after each commit with the number of changes it made."""
        with self._lock:
            self._writes += count
            if self._running or self._writes < self._next_run:
                return
            self._running = True
        threading.Thread(target=self._run, name="planner-statistics", daemon=True).start()

    def _run(self) -> None:
        try:
            self.analyze()
        except Exception:  # noqa: BLE001 - statistics are an optimisation; never fail a write
            log.warning("ANALYZE failed; searches may use slower plans", exc_info=True)
        finally:
            with self._lock:
                self._running = False
