"""The channels' figures, computed from the database: what the console's dashboard shows
and what `/metrics` can export (one module, so both say the same).

Every query reads an index or a small table (no scan of the HL7 inbox or the resources), so
the dashboard can refresh every few seconds on a server holding millions of messages.
`collect` returns plain data (dicts, lists, numbers): templates and metric collectors both
read it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine, and_, func, select

from ai_worker.jobs import ai_jobs
from dicomweb_bridge.state import imaging_cursors, imaging_studies
from fhir_server.bulk.models import bulk_jobs
from fhir_server.schema import idx_token, outbox, resources
from fhir_server.store.outbox import outbox_consumers
from fhir_server.subscriptions.models import subscription_queue
from hl7_listener.inbox import hl7_messages
from openemr_bridge.models import state as openemr_state
from openemr_bridge.sync import LAST_RUN_KEY

MINUTE_US = 60_000_000
WINDOW_MINUTES = 10  # messages per minute are shown for the last ten minutes
ERRORS_SINCE_US = 24 * 3600 * 1_000_000  # last error per sender: within a day
OPENEMR_PENDING_TAG = "urn:interop:openemr-pending"
M = hl7_messages.c


def collect(engine: Engine, now: float | None = None) -> dict[str, Any]:
    """Every figure of the dashboard, as of `now` (epoch seconds)."""
    now = time.time() if now is None else now
    now_us = int(now * 1_000_000)
    with engine.connect() as conn:
        return {
            "at": now,
            "hl7": _hl7(conn, now_us),
            "outbox": _outbox(conn),
            "imaging": _imaging(conn, now),
            "openemr": _openemr(conn),
            "ai": _ai(conn),
            "subscriptions": _subscriptions(conn),
            "bulk": _bulk(conn),
        }


def _hl7(conn: Any, now_us: int) -> dict[str, Any]:
    since = (now_us // MINUTE_US - WINDOW_MINUTES + 1) * MINUTE_US
    minute = (M.received_at // MINUTE_US).label("minute")
    rows = conn.execute(
        select(minute, M.status, func.count())
        .where(M.received_at >= since)
        .group_by(minute, M.status)
    ).all()
    first = since // MINUTE_US
    counts: list[dict[str, int]] = [{} for _ in range(WINDOW_MINUTES)]
    statuses: dict[str, int] = {}
    for at, status, count in rows:
        slot = int(at) - first
        if 0 <= slot < WINDOW_MINUTES:
            counts[slot][status] = counts[slot].get(status, 0) + count
        statuses[status] = statuses.get(status, 0) + count
    per_minute = [{"minute": (first + i) * 60, "counts": c} for i, c in enumerate(counts)]
    waiting = conn.execute(
        select(func.count()).select_from(hl7_messages).where(M.status == "received")
    ).scalar_one()
    latest = (
        select(M.sender, func.max(M.pk).label("pk"))
        .where(M.status == "failed", M.received_at >= now_us - ERRORS_SINCE_US)
        .group_by(M.sender)
        .subquery()
    )
    errors = conn.execute(
        select(M.sender, M.pk, M.received_at, M.error, M.message_type)
        .join(latest, M.pk == latest.c.pk)
        .order_by(M.pk.desc())
        .limit(50)
    ).all()
    return {
        "per_minute": per_minute,
        "window_by_status": statuses,
        "waiting": waiting,
        "last_errors": [
            {"sender": s, "id": pk, "received_at": at / 1e6, "error": e or "", "type": t}
            for s, pk, at, e, t in errors
        ],
    }


def _outbox(conn: Any) -> dict[str, Any]:
    last = conn.execute(select(func.max(outbox.c.pk))).scalar() or 0
    rows = conn.execute(
        select(outbox_consumers.c.name, outbox_consumers.c.floor).order_by(outbox_consumers.c.name)
    ).all()
    return {
        "last": last,
        "consumers": [{"name": n, "floor": f, "lag": max(0, last - f)} for n, f in rows],
    }


def _imaging(conn: Any, now: float) -> dict[str, Any]:
    cursors = conn.execute(select(imaging_cursors).order_by(imaging_cursors.c.name)).all()
    last = conn.execute(
        select(imaging_studies.c.study_uid, imaging_studies.c.resource_id,
               imaging_studies.c.synced_at, imaging_studies.c.instances)
        .order_by(imaging_studies.c.synced_at.desc()).limit(1)
    ).first()  # fmt: skip
    studies = conn.execute(select(func.count()).select_from(imaging_studies)).scalar_one()
    return {
        "cursors": [
            {
                "name": c.name,
                "value": c.value,
                "updated_at": c.updated_at,
                "age_seconds": max(0, int(now - c.updated_at)),
            }
            for c in cursors
        ],  # fmt: skip
        "studies": studies,
        "last_study": None
        if last is None
        else {
            "uid": last[0],
            "resource": f"ImagingStudy/{last[1]}",
            "synced_at": last[2],
            "instances": last[3],
        },  # fmt: skip
    }


def _openemr(conn: Any) -> dict[str, Any]:
    last = conn.execute(
        select(openemr_state.c.value).where(openemr_state.c.name == LAST_RUN_KEY)
    ).scalar()
    pending = conn.execute(
        select(func.count(func.distinct(idx_token.c.resource_pk))).where(
            and_(
                idx_token.c.res_type == "Patient",
                idx_token.c.param == "_tag",
                func.substr(idx_token.c.system, 1, 128) == OPENEMR_PENDING_TAG,
            )
        )
    ).scalar_one()
    return {"last_sync": int(last) if last else None, "pending": pending}


def _ai(conn: Any) -> dict[str, Any]:
    by_status = dict(
        conn.execute(select(ai_jobs.c.status, func.count()).group_by(ai_jobs.c.status)).all()
    )
    took = ai_jobs.c.updated - ai_jobs.c.created
    models = conn.execute(
        select(ai_jobs.c.model, func.count(), func.avg(took), func.max(took))
        .where(ai_jobs.c.status == "done")
        .group_by(ai_jobs.c.model)
        .order_by(ai_jobs.c.model)
    ).all()
    failed = conn.execute(
        select(ai_jobs.c.task_id, ai_jobs.c.model, ai_jobs.c.error, ai_jobs.c.updated)
        .where(ai_jobs.c.status == "failed")
        .order_by(ai_jobs.c.updated.desc())
        .limit(5)
    ).all()
    return {
        "by_status": {s: by_status.get(s, 0) for s in ("queued", "running", "done", "failed")},
        "models": [
            {
                "model": m,
                "done": n,
                "avg_seconds": round(float(a or 0) / 1e6, 2),
                "max_seconds": round(float(x or 0) / 1e6, 2),
            }
            for m, n, a, x in models
        ],  # fmt: skip
        "recent_failures": [
            {"task": t, "model": m, "error": e or "", "at": u / 1e6} for t, m, e, u in failed
        ],
    }


def _subscriptions(conn: Any) -> dict[str, Any]:
    q = subscription_queue.c
    queued = {
        sub: {"queued": n, "max_attempts": a}
        for sub, n, a in conn.execute(
            select(q.sub_id, func.count(), func.max(q.attempts)).group_by(q.sub_id)
        ).all()
    }
    rows = conn.execute(
        select(resources.c.res_id, resources.c.body)
        .where(resources.c.res_type == "Subscription", resources.c.deleted.is_(False))
        .order_by(resources.c.last_updated.desc())
        .limit(100)
    ).all()
    subs = []
    for res_id, body in rows:
        try:
            resource = json.loads(bytes(body)) if body is not None else {}
        except ValueError:
            resource = {}
        waiting = queued.get(res_id, {"queued": 0, "max_attempts": 0})
        subs.append(
            {
                "id": res_id,
                "status": resource.get("status", ""),
                "criteria": resource.get("criteria", ""),
                "error": resource.get("error", ""),
                **waiting,
            }
        )
    return {"subscriptions": subs}


def _bulk(conn: Any) -> dict[str, Any]:
    b = bulk_jobs.c
    counts = conn.execute(select(b.kind, b.status, func.count()).group_by(b.kind, b.status)).all()
    recent = conn.execute(
        select(b.job_id, b.kind, b.status, b.created, b.progress)
        .order_by(b.created.desc())
        .limit(5)
    ).all()
    return {
        "counts": [{"kind": k, "status": s, "count": n} for k, s, n in counts],
        "recent": [
            {"job": j, "kind": k, "status": s, "created": c / 1e6, "progress": p}
            for j, k, s, c, p in recent
        ],
    }
