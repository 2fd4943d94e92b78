"""The `$export` job: stream each type's current resources from the database into NDJSON.

One query per type, read in batches from a streaming cursor (server-side on PostgreSQL), so
memory stays flat however many resources there are; the stored JSON bytes are written as they
are (each is one line already), reshaped only when `_elements` asks for it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Connection, Select, and_, false, or_, select

from fhir_server import fhirjson
from fhir_server.api.bundling import shape
from fhir_server.bulk.jobs import Cancelled, Job, JobStore
from fhir_server.bulk.ndjson import OutputFile, SplitWriter
from fhir_server.bulk.params import ExportRequest, in_patient_compartment
from fhir_server.clock import to_instant
from fhir_server.errors import operation_outcome
from fhir_server.search.query import Compiler
from fhir_server.search.registry import patient_compartment, resource_types
from fhir_server.store.db import unbounded
from fhir_server.store.models import idx_reference, resources
from fhir_server.store.repository import Store
from fhir_server.subscriptions.ownership import owned_only
from fhir_server.validation import top_level_keys

R = resources.c
BATCH = 2000
READ_AHEAD = 4
MAX_PROBLEMS = 10_000  # per-resource problems listed in the manifest's error file
PROGRESS_SECONDS = 1.0


@dataclass(slots=True)
class BulkEnv:
    """What a job needs besides its row: the store, the public base URL, whether auth is on."""

    store: Store
    base_url: str
    auth: bool


def file_url(base_url: str, job_id: str, name: str) -> str:
    return f"{base_url}/$bulk-file/{job_id}/{name}"


def run_export(jobs: JobStore, job: Job, env: BulkEnv) -> None:
    request = ExportRequest.from_json(job.params)
    directory = jobs.directory(job.job_id)
    directory.mkdir(parents=True, exist_ok=True)
    problems = [f"Ignored: {text}" for text in request.ignored]  # the manifest's error file
    with env.store.engine.connect() as conn:
        unbounded(conn)  # an export reads for as long as it takes
        patients = _patients(conn, request, problems)
        types = request.types if request.types is not None else _present_types(conn, request)
        outputs: list[OutputFile] = []
        exported, last_report = 0, time.monotonic()
        for res_type in types:
            writer = SplitWriter(directory, res_type, jobs.config.max_file_bytes)
            elements = _elements_for(request.elements, res_type)
            query = select(R.body).where(*_conditions(request, res_type, patients, env.base_url))
            if job.owner:  # a client exports its own Subscriptions, not other clients'
                query = query.where(*owned_only(job.owner, res_type, R.res_type, R.res_id))
            try:
                for batch in _batches(conn, query):
                    if elements:
                        writer.write_many(_shaped(batch, elements, res_type, problems))
                    else:
                        writer.write_many(batch)
                    exported += len(batch)
                    if time.monotonic() - last_report >= PROGRESS_SECONDS:
                        last_report = time.monotonic()
                        if not jobs.progress(job.job_id, f"{res_type}: {exported} exported"):
                            raise Cancelled()
            finally:
                outputs.extend(writer.close())
            conn.rollback()  # end the read transaction between types
    if not jobs.progress(job.job_id, f"{exported} exported, writing the manifest"):
        raise Cancelled()
    errors = []
    if problems:
        name = "OperationOutcome-1.ndjson"
        with open(directory / name, "wb") as handle:
            for text in problems:
                outcome = operation_outcome(text, "informational", "information")
                handle.write(fhirjson.dumps(outcome) + b"\n")
        errors.append({"type": "OperationOutcome", "url": file_url(env.base_url, job.job_id, name)})
    manifest = {
        "transactionTime": to_instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": env.auth,
        "output": [
            {
                "type": f.res_type,
                "url": file_url(env.base_url, job.job_id, f.name),
                "count": f.count,
            }
            for f in outputs
            if f.count
        ],
        "error": errors,
    }
    jobs.finish(job.job_id, "completed", manifest)


def _batches(conn: Connection, query: Select[Any]) -> Iterator[list[bytes]]:
    """The bodies a query selects, BATCH at a time, read by a DBAPI cursor (server-side on
    PostgreSQL, so memory stays flat) without a result layer per row.

    A reader thread fetches while the caller writes files: the database driver and file
    writes both release the GIL, so the two overlap instead of adding up. At most
    `READ_AHEAD` batches wait in between.
    """
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positiontup is not None:
        params = tuple(params[name] for name in compiled.positiontup)
    driver: Any = conn.connection.driver_connection
    postgres = conn.dialect.name == "postgresql"
    cursor = driver.cursor(name=f"export_{uuid.uuid4().hex}") if postgres else driver.cursor()
    ahead: queue.Queue[list[bytes] | BaseException | None] = queue.Queue(READ_AHEAD)
    stop = threading.Event()

    def read() -> None:
        try:
            cursor.execute(compiled.string, params)
            while not stop.is_set() and (rows := cursor.fetchmany(BATCH)):
                ahead.put([row[0] for row in rows])
            ahead.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            ahead.put(exc)

    reader = threading.Thread(target=read, daemon=True, name="bulk-export-read")
    reader.start()
    try:
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # let a reader blocked on a full queue finish
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)
        cursor.close()
        if postgres:
            driver.rollback()  # the named cursor's transaction


def _shaped(
    bodies: list[bytes], elements: list[str], res_type: str, problems: list[str]
) -> list[bytes]:
    """`_elements` applied; a body that cannot be reshaped is reported, not exported."""
    out = []
    for body in bodies:
        try:
            out.append(shape(body, None, elements))
        except (fhirjson.JSONDecodeError, TypeError, ValueError) as exc:
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"A stored {res_type} could not be reshaped: {exc}")
    return out


def _present_types(conn: Connection, request: ExportRequest) -> list[str]:
    """Every type with at least one current resource (in the Patient compartment, below
    system level). The kick-off has already narrowed `types` to what the grant allows."""
    found = conn.execute(
        select(R.res_type).where(R.deleted == false()).group_by(R.res_type).order_by(R.res_type)
    )
    types = [t for (t,) in found if t in resource_types()]
    conn.rollback()
    if request.level != "system":
        types = [t for t in types if in_patient_compartment(t)]
    return types


def _patients(conn: Connection, request: ExportRequest, problems: list[str]) -> list[str] | None:
    """The patients a Group or `patient` parameter limits the export to (None: no limit)."""
    patients = request.patients
    if request.level == "group":
        body = conn.execute(
            select(R.body).where(
                R.res_type == "Group", R.res_id == request.group_id, R.deleted == false()
            )
        ).scalar()
        conn.rollback()
        members = group_members(fhirjson.loads(body) if body else {})
        if patients is not None:
            outside = [p for p in patients if p not in members]
            problems.extend(f"Patient/{p} is not a member of the Group" for p in outside)
            members = [p for p in members if p in patients]
        patients = members
    return patients


def group_members(group: dict[str, Any]) -> list[str]:
    """Ids of the active `Patient` members of a Group (references Patient/id, absolute or not)."""
    ids: list[str] = []
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference")
        if not isinstance(reference, str):
            continue
        parts = reference.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] not in ids:
            ids.append(parts[-1])
    return ids


def _conditions(
    request: ExportRequest, res_type: str, patients: list[str] | None, base_url: str
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [R.res_type == res_type, R.deleted == false()]
    if request.since is not None:
        conds.append(R.last_updated >= request.since)
    filters = request.type_filters.get(res_type)
    if filters:
        compiler = Compiler(base_url, strict=True)
        alternatives = [
            and_(*compiler.compile(res_type, parse_qsl(q, keep_blank_values=True)).where)
            for q in filters
        ]
        conds.append(or_(*alternatives))
    if request.level != "system":
        conds.append(_in_compartments(res_type, patients))
    return conds


def _in_compartments(res_type: str, patients: list[str] | None) -> ColumnElement[bool]:
    """In the compartment of any of `patients` (None: of any patient at all)."""
    ref = idx_reference.c
    if res_type == "Patient":
        return R.res_id.in_(patients) if patients is not None else R.pk.is_not(None)
    members = select(ref.resource_pk).where(
        ref.res_type == res_type,
        ref.param.in_(patient_compartment(res_type)),
        ref.target_type == "Patient",
    )
    if patients is not None:
        members = members.where(ref.target_id.in_(patients))
    return R.pk.in_(members)


def _elements_for(elements: list[str] | None, res_type: str) -> list[str] | None:
    """`_elements` entries for this type (`Type.element` for it, or plain `element` for all),
    plus the type's mandatory elements, so every line stays a valid resource."""
    if not elements:
        return None
    picked = list(mandatory_elements(res_type))
    for element in elements:
        owner, dot, name = element.partition(".")
        if not dot:
            picked.append(element)
        elif owner == res_type:
            picked.append(name)
    return picked if len(picked) > len(mandatory_elements(res_type)) else None


@cache
def mandatory_elements(res_type: str) -> tuple[str, ...]:
    """The JSON keys of the top-level elements with cardinality 1..x in the R4 definitions."""
    return tuple(sorted(top_level_keys(res_type, "min")))
