"""`$import` and `interop import`: NDJSON lines into the store through the one write path.

Lines go in batches, each batch one transaction Bundle of PUTs (resources with an id keep it,
so importing the same file twice changes nothing) or POSTs, applied by `Store.apply` exactly
like a REST client's Bundle and audited as the import's. When a batch fails, its entries are
applied one by one, so one bad line costs only itself and is reported with its line number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

import outbound
from fhir_server import fhirjson
from fhir_server.bulk.export import BulkEnv, file_url
from fhir_server.bulk.jobs import Cancelled, Job, JobStore
from fhir_server.clock import to_instant
from fhir_server.errors import FhirError, operation_outcome
from fhir_server.search.registry import resource_types
from fhir_server.store.audit import Actor
from fhir_server.store.repository import Store


@dataclass(slots=True)
class LineError:
    source: str
    line: int
    diagnostics: str

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(f"{self.source} line {self.line}: {self.diagnostics}")


@dataclass(slots=True)
class ImportCounts:
    loaded: int = 0
    failed: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


ErrorSink = Callable[[LineError], None]


def import_lines(
    store: Store,
    source: str,
    lines: Iterable[bytes],
    batch_size: int,
    on_error: ErrorSink,
    expected_type: str | None = None,
    on_batch: Callable[[ImportCounts], None] | None = None,
    counts: ImportCounts | None = None,
    actor: Actor | None = None,
) -> ImportCounts:
    """Apply NDJSON `lines` (1-based line numbers in errors); returns the running counts.
    `actor`: the audit trail's agent (default: an import of `source`)."""
    actor = actor or Actor.of_channel("import", source)
    counts = counts or ImportCounts()
    pending: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        resource, problem = _parse_line(raw, expected_type)
        if problem:
            counts.failed += 1
            on_error(LineError(source, number, problem))
            continue
        assert resource is not None
        pending.append((number, resource))
        if len(pending) >= batch_size:
            _apply(store, actor, source, pending, counts, on_error)
            pending = []
            if on_batch is not None:
                on_batch(counts)
    if pending:
        _apply(store, actor, source, pending, counts, on_error)
        if on_batch is not None:
            on_batch(counts)
    return counts


def _parse_line(raw: bytes, expected_type: str | None) -> tuple[dict[str, Any] | None, str]:
    try:
        resource = fhirjson.loads(raw)
    except fhirjson.JSONDecodeError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(resource, dict):
        return None, "not a JSON object"
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or res_type not in resource_types():
        return None, f"unknown resourceType {res_type!r}"
    if expected_type and res_type != expected_type:
        return None, f"a {res_type} in an input declared as {expected_type}"
    res_id = resource.get("id")
    if res_id is not None and not isinstance(res_id, str):
        return None, "id must be a string"
    return resource, ""


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    res_type, res_id = resource["resourceType"], resource.get("id")
    if res_id:
        return {"resource": resource, "request": {"method": "PUT", "url": f"{res_type}/{res_id}"}}
    return {"resource": resource, "request": {"method": "POST", "url": res_type}}


def _apply(
    store: Store,
    actor: Actor,
    source: str,
    pending: list[tuple[int, dict[str, Any]]],
    counts: ImportCounts,
    on_error: ErrorSink,
) -> None:
    keys = [(r["resourceType"], r.get("id")) for _, r in pending]
    unique = len({k for k in keys if k[1]}) == sum(1 for k in keys if k[1])
    if unique:
        entries = [_entry(fhirjson.copy(r)) for _, r in pending]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        try:
            store.apply(bundle, actor, owned=True)  # the entries hold copies made here
        except FhirError:
            pass  # find the culprits one by one below
        else:
            for res_type, _ in keys:
                counts.by_type[res_type] = counts.by_type.get(res_type, 0) + 1
            counts.loaded += len(pending)
            return
    for number, resource in pending:  # in file order: a repeated id ends as its last line
        single = {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(resource)]}
        try:
            store.apply(single, actor)
        except FhirError as exc:
            counts.failed += 1
            on_error(LineError(source, number, exc.diagnostics))
            continue
        res_type = resource["resourceType"]
        counts.by_type[res_type] = counts.by_type.get(res_type, 0) + 1
        counts.loaded += 1


# -- sources -------------------------------------------------------------------------------------


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream, holding at most one line plus one chunk in memory."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest


def file_lines(handle: BinaryIO) -> Iterator[bytes]:
    return split_lines(iter(lambda: handle.read(1 << 20), b""))


def source_lines(jobs: JobStore, env: BulkEnv, url: str, owner: str) -> Iterator[bytes]:
    """The lines at `url`: a file of this server (an upload or an export) read from disk, or
    anything else over http(s)."""
    own = f"{env.base_url}/$bulk-file/"
    if url.startswith(own):
        job_id, _, name = url[len(own) :].partition("/")
        job = jobs.get(job_id)
        path = jobs.directory(job_id) / name
        if job is None or job.owner != owner or "/" in name or not path.is_file():
            raise FhirError(404, f"{url} is not a file of this server the client may read")
        with open(path, "rb") as handle:
            yield from file_lines(handle)
        return
    with outbound.Client(jobs.config.sources) as http, http.stream("GET", url) as response:
        if response.status_code != 200:
            raise FhirError(
                400, f"GET {url} answered {response.status_code}", "exception"
            )  # fmt: skip
        yield from split_lines(response.iter_bytes())


# -- the job ---------------------------------------------------------------------------------------


def run_import(jobs: JobStore, job: Job, env: BulkEnv) -> None:
    directory = jobs.directory(job.job_id)
    directory.mkdir(parents=True, exist_ok=True)
    error_path = directory / "OperationOutcome-1.ndjson"
    outputs: list[dict[str, Any]] = []
    counts = ImportCounts()
    errors = 0
    with open(error_path, "wb") as error_file:

        def on_error(error: LineError) -> None:
            nonlocal errors
            errors += 1
            error_file.write(fhirjson.dumps(error.outcome()) + b"\n")

        def on_batch(running: ImportCounts) -> None:
            text = f"{running.loaded} imported, {running.failed} failed"
            if not jobs.progress(job.job_id, text):
                raise Cancelled()

        for item in job.params["input"]:
            url, res_type = item["url"], item.get("type")
            before = counts.loaded
            try:
                lines = source_lines(jobs, env, url, job.owner)
                import_lines(
                    env.store,
                    url,
                    lines,
                    jobs.config.import_batch,
                    on_error,
                    res_type,
                    on_batch,
                    counts,
                    Actor.of_channel("import", f"$import job {job.job_id}"),
                )
            except outbound.Refused as exc:
                on_error(LineError(url, 0, f"was not fetched: {exc}"))
            except (FhirError, httpx.HTTPError, OSError) as exc:
                text = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
                on_error(LineError(url, 0, f"could not be read: {text or type(exc).__name__}"))
            outputs.append({"type": res_type, "inputUrl": url, "count": counts.loaded - before})
    result: dict[str, Any] = {
        "transactionTime": to_instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": env.auth,
        "output": outputs,
        "error": [],
    }
    if errors:
        result["error"].append(
            {
                "type": "OperationOutcome",
                "url": file_url(env.base_url, job.job_id, error_path.name),
                "count": errors,
            }
        )
    else:
        Path(error_path).unlink(missing_ok=True)
    jobs.finish(job.job_id, "completed", result)
