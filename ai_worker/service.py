"""The AI service: turns requests into Tasks and jobs, and runs a job's two stages.

Every FHIR write (Device, Task progress, the result, a failure) goes through
`Store.apply`, the one write path. The same two stage functions
run inside a Celery worker (`ai_worker.celery_app`) and inside `interop serve` without Redis
(`ai_worker.embedded`), so the two modes cannot drift apart.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import exc as sa_exc

from ai_worker.errors import BadInput, TransientError
from ai_worker.jobs import Job, Jobs
from ai_worker.pixels.fetch import DicomWebSource
from ai_worker.pixels.volume import Volume, VolumeBuilder
from ai_worker.plugins import ModelPlugin, Registry, StudyInfo
from ai_worker.rules import models_for, parse_rules
from fhir_server.errors import FhirError
from fhir_server.store.apply import EntryResult
from fhir_server.store.audit import Actor
from fhir_server.store.repository import HasStore
from mappers.ai import ModelInfo, device_resource, result_bundle, task_failed, task_progress
from mappers.ai.tasks import task_model, task_resource

log = logging.getLogger("interop.ai")
FINISHED_TASK = ("completed", "failed", "cancelled", "rejected", "entered-in-error")


def now_instant() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def model_actor(name: str, version: str) -> Actor:
    """The audit trail's agent for what a model writes: the model, by name and version."""
    return Actor.of_channel("ai", f"{name} {version}".strip())


WORKER = Actor.of_channel("ai", "ai-worker")  # Task bookkeeping not tied to one model


def model_info(plugin: ModelPlugin) -> ModelInfo:
    return ModelInfo(plugin.name, plugin.version, plugin.manufacturer, plugin.description)


class Submitter(Protocol):
    """Where jobs go to run: Celery on Redis, or the in-process runner."""

    def submit(self, task_id: str) -> None: ...


@dataclass
class Claimed:
    """What trying to start a stage found."""

    ok: bool
    job: Job | None
    reason: str = ""  # when not ok: finished | busy | elsewhere | unknown


class Cancelled(Exception):
    """The Task was cancelled (or otherwise ended) by someone else while the job ran."""


class AiService:
    def __init__(
        self,
        settings: Any,
        ctx: HasStore,
        registry: Registry | None = None,
        submitter: Submitter | None = None,
    ) -> None:
        self.settings = settings
        self.ctx = ctx
        self.registry = registry if registry is not None else Registry.load(settings)
        self.rules = parse_rules(settings.ai_rules)
        self.jobs = Jobs(ctx.store.engine)
        self.submitter = submitter
        self.lease = float(settings.ai_lease_seconds)

    # -- identity of this worker --------------------------------------------------------------

    @staticmethod
    def worker_name() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:128]

    def backoff(self, retries: int) -> float:
        return float(self.settings.ai_retry_backoff) * (2**retries)

    # -- FHIR reads and writes ---------------------------------------------------------------

    def _read(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        stored = self.ctx.store.read(res_type, res_id)
        if stored is None or stored.deleted:
            return None
        return stored.json()

    def _apply(self, bundle: dict[str, Any], actor: Actor = WORKER) -> list[EntryResult]:
        try:
            return self.ctx.store.apply(bundle, actor)
        except sa_exc.OperationalError as exc:
            raise TransientError(f"database unavailable: {exc.orig}") from exc

    def _put_task(self, task: dict[str, Any]) -> None:
        body = {k: v for k, v in task.items() if k != "meta"}
        self._apply(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": body, "request": {"method": "PUT", "url": f"Task/{task['id']}"}}
                ],
            }
        )

    # -- requests: $analyze, rules, Tasks created through the API -------------------------------

    def request(
        self,
        study_id: str,
        model: str,
        requester: dict[str, Any] | None = None,
        reason: str = "",
    ) -> tuple[str, bool]:
        """Ask for an analysis. Returns (Task id, whether a new job was queued): when the same
        study and model version is already queued or running, that job's Task instead."""
        study = self._read("ImagingStudy", study_id)
        if study is None:
            raise BadInput(f"ImagingStudy/{study_id} is not known")
        plugin = self.registry.get(model)
        info = StudyInfo.from_imaging_study(study)
        if not plugin.accepts(info):
            raise BadInput(f"model {plugin.name} does not take this study ({info.description})")
        running = self.jobs.active_for(study_id, plugin.name, plugin.version)
        if running is not None:
            return running.task_id, False
        meta = model_info(plugin)
        task = task_resource(study, meta, now_instant(), requester, reason)
        response = self._apply(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": device_resource(meta),
                        "request": {
                            "method": "PUT",
                            "url": f"Device/{device_resource(meta)['id']}",
                        },
                    },
                    {
                        "fullUrl": "urn:uuid:6d1b7c2e-4e3f-4a57-9d0c-3a3c1d0e0a11",
                        "resource": task,
                        "request": {"method": "POST", "url": "Task"},
                    },
                ],
            },
            model_actor(plugin.name, plugin.version),
        )
        task_id = str(response[1].res_id)
        return self._open(task_id, study_id, plugin)

    def _open(self, task_id: str, study_id: str, plugin: ModelPlugin) -> tuple[str, bool]:
        runs, created = self.jobs.open(task_id, study_id, plugin.name, plugin.version)
        if runs != task_id:  # lost a race against another request for the same analysis
            task = self._read("Task", task_id)
            if task is not None and task.get("status") == "requested":
                task = task_failed(task, f"already being analysed by Task/{runs}", now_instant())
                task["status"] = "rejected"
                self._put_task(task)
            return runs, False
        # only the call that created the job submits it: the outbox consumer adopting the
        # same new Task may get there first, and a second submission would run it early
        if created and self.submitter is not None:
            self.submitter.submit(task_id)
        return task_id, True

    def adopt(self, task_id: str) -> None:
        """A Task created through the API that names a model: give it a job."""
        task = self._read("Task", task_id)
        if task is None or task.get("status") != "requested" or self.jobs.get(task_id):
            return
        named = task_model(task)
        if named is None:
            return
        name, version = named
        focus = str((task.get("focus") or {}).get("reference") or "")
        try:
            if not focus.startswith("ImagingStudy/"):
                raise BadInput("an AI Task's focus must be an ImagingStudy")
            plugin = self.registry.get(name)
            if version and version != plugin.version:
                raise BadInput(f"model {name} {version} is not installed (have {plugin.version})")
            study_id = focus.split("/", 1)[1]
            if self._read("ImagingStudy", study_id) is None:
                raise BadInput(f"{focus} is not known")
        except BadInput as exc:
            self._put_task(task_failed(task, str(exc), now_instant()))
            return
        self._open(task_id, study_id, plugin)

    def on_change(self, res_type: str, res_id: str, interaction: str) -> None:
        """The outbox consumer: rules on ImagingStudy changes, new Tasks adopted."""
        if interaction == "delete":
            return
        if res_type == "Task" and interaction == "create":
            self.adopt(res_id)
        elif res_type == "ImagingStudy" and self.rules and self.settings.dicomweb_url:
            self.trigger(res_id)  # (imaging off: no pixels to fetch, so no Task either)

    def models_for(self, study_id: str) -> list[str]:
        """Models for a study asked for by hand: those the rules pick, else every installed
        plugin that accepts it."""
        study = self._read("ImagingStudy", study_id)
        if study is None:
            return []
        info = StudyInfo.from_imaging_study(study)
        chosen = [m for m in models_for(self.rules, info) if m in self.registry.plugins]
        return chosen or [p.name for p in self.registry if p.accepts(info)]

    def trigger(self, study_id: str) -> list[str]:
        """Run the rules on one ImagingStudy; returns the Task ids queued."""
        study = self._read("ImagingStudy", study_id)
        if study is None:
            return []
        info = StudyInfo.from_imaging_study(study)
        changed = _instant_us((study.get("meta") or {}).get("lastUpdated"))
        queued = []
        for name in models_for(self.rules, info):
            plugin = self.registry.plugins.get(name)
            if plugin is None:
                log.warning("AI rule names model %s, which is not installed", name)
                continue
            if not plugin.accepts(info):
                continue
            last = self.jobs.latest_for(study_id, plugin.name, plugin.version)
            if last is not None and last.created >= changed:
                continue  # this version of the study was already analysed (or is queued)
            task_id, new = self.request(study_id, name, reason="trigger rule")
            if new:
                queued.append(task_id)
        return queued

    # -- running a job ---------------------------------------------------------------------

    def _claim(self, task_id: str, stage: str, worker: str) -> Claimed:
        if self.jobs.claim(task_id, stage, worker, self.lease):
            return Claimed(True, self.jobs.get(task_id))
        job = self.jobs.get(task_id)
        if job is None:
            return Claimed(False, None, "unknown")
        if job.status in ("done", "failed"):
            return Claimed(False, job, "finished")
        if job.stage != stage:
            return Claimed(False, job, "elsewhere")
        return Claimed(False, job, "busy")

    @contextmanager
    def _heartbeat(self, task_id: str, worker: str) -> Iterator[None]:
        """Renew the lease while a stage works, so only a dead worker's lease runs out."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease / 3):
                try:
                    self.jobs.renew(task_id, worker, self.lease)
                except Exception:  # noqa: BLE001 - the next beat tries again
                    log.warning("could not renew the lease of Task/%s", task_id)

        thread = threading.Thread(target=beat, name=f"ai-lease-{task_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _progress(self, task_id: str, worker: str, name: str) -> dict[str, Any]:
        task = self._read("Task", task_id)
        if task is None or task.get("status") in FINISHED_TASK:
            raise Cancelled(f"Task/{task_id} is {task.get('status') if task else 'gone'}")
        self.jobs.step(task_id, worker, name)
        updated = task_progress(task, name, now_instant())
        self._put_task(updated)
        return updated

    def _context(self, job: Job) -> tuple[dict[str, Any], StudyInfo, ModelPlugin]:
        study = self._read("ImagingStudy", job.study_id)
        if study is None:
            raise BadInput(f"ImagingStudy/{job.study_id} was deleted")
        plugin = self.registry.get(job.model)
        if plugin.version != job.model_version:
            raise BadInput(
                f"model {job.model} {job.model_version} is not installed here "
                f"(this worker has {plugin.version})"
            )
        return study, StudyInfo.from_imaging_study(study), plugin

    def decode_stage(self, task_id: str, worker: str) -> Volume | Claimed:
        """Fetch and decode a job's study: a Volume, or what was found instead of work."""
        claimed = self._claim(task_id, "decode", worker)
        if not claimed.ok or claimed.job is None:
            return claimed
        job = claimed.job
        with self._guard(task_id, worker), self._heartbeat(task_id, worker):
            study, info, plugin = self._context(job)
            if not info.study_uid:
                raise BadInput(f"ImagingStudy/{job.study_id} has no StudyInstanceUID identifier")
            self._progress(task_id, worker, "fetching")
            source = DicomWebSource(
                self.settings.dicomweb_url,
                self.settings.orthanc_user,
                self.settings.orthanc_password.get_secret_value(),
            )
            builder = VolumeBuilder()
            decoding = False
            for series_uid, modality in source.series(info.study_uid):
                if modality and modality not in plugin.modalities:
                    continue
                for ds in source.instances(info.study_uid, series_uid):
                    if not decoding:
                        self._progress(task_id, worker, "decoding")
                        decoding = True
                    builder.add(ds)
            return builder.largest(set(plugin.modalities))
        return Claimed(False, self.jobs.get(task_id), "finished")

    def infer_stage(self, task_id: str, worker: str, volume: Volume | None) -> Claimed:
        """Run the model and write the result; volume None means the decode must run again."""
        claimed = self._claim(task_id, "infer", worker)
        if not claimed.ok or claimed.job is None:
            return claimed
        job = claimed.job
        if volume is None:
            self.jobs.restart(task_id, "decode")
            return Claimed(False, job, "redecode")
        with self._guard(task_id, worker), self._heartbeat(task_id, worker):
            study, info, plugin = self._context(job)
            self._progress(task_id, worker, "inferring")
            findings = plugin.run(volume, info)
            task = self._progress(task_id, worker, "writing")
            response = self._apply(
                result_bundle(task, study, model_info(plugin), findings, now_instant()),
                model_actor(plugin.name, plugin.version),
            )
            report_id = next((r.res_id for r in response if r.res_type == "DiagnosticReport"), None)
            self.jobs.finish(task_id, "done", report_id=report_id)
            log.info("AI Task/%s done: DiagnosticReport/%s", task_id, report_id)
            return Claimed(True, self.jobs.get(task_id), "done")
        return Claimed(False, self.jobs.get(task_id), "finished")

    @contextmanager
    def _guard(self, task_id: str, worker: str) -> Iterator[None]:
        """Bad input fails the Task at once; transient errors release the job for a retry."""
        try:
            yield
        except (TransientError, sa_exc.OperationalError) as exc:
            self.jobs.release(task_id, worker, str(exc)[:1000])
            raise TransientError(str(exc)) from exc
        except Cancelled as exc:
            self.jobs.finish(task_id, "failed", str(exc))
        except BadInput as exc:
            self.fail(task_id, str(exc))
        except FhirError as exc:
            self.fail(task_id, f"the result was refused: {exc.diagnostics}")
        except Exception as exc:  # noqa: BLE001 - a plugin bug fails its Task, not the worker
            log.exception("AI Task/%s failed", task_id)
            self.fail(task_id, f"internal error: {type(exc).__name__}: {exc}")

    def fail(self, task_id: str, reason: str) -> None:
        """End a job and its Task as failed, with the reason in Task.statusReason. The Task
        first: a job seen failed has its Task failed (a crash between the two leaves the job
        to the sweeper, which runs it again, never a Task in progress forever)."""
        log.warning("AI Task/%s failed: %s", task_id, reason)
        task = self._read("Task", task_id)
        if task is not None and task.get("status") not in FINISHED_TASK:
            self._put_task(task_failed(task, reason, now_instant()))
        self.jobs.finish(task_id, "failed", reason[:1000])

    def run_inline(self, task_id: str) -> None:
        """Both stages in this thread, the volume kept in memory (the embedded mode)."""
        worker = self.worker_name()
        job = self.jobs.get(task_id)
        volume: Volume | None = None
        if job is not None and job.stage == "decode":
            result = self.decode_stage(task_id, worker)
            if not isinstance(result, Volume):
                return
            volume = result
            self.jobs.advance(task_id, worker, "infer")
        outcome = self.infer_stage(task_id, worker, volume)
        if outcome.reason == "redecode":
            self.run_inline(task_id)

    def recover(self, grace_seconds: float = 60.0) -> list[str]:
        """Submit again the jobs nobody works on: a dead worker's (its lease ran out), or
        queued and not taken up within `grace_seconds` (the message was lost: with a worker
        that died holding it, or with Redis). A job whose message was only waiting gets a
        second one, which finds the job taken and does nothing."""
        from ai_worker.jobs import now_us

        if self.submitter is None:
            return []
        stale = self.jobs.stale(now_us() - int(grace_seconds * 1_000_000))
        for job in stale:
            if job.status == "queued":
                self.jobs.asked_again(job.task_id)
            self.submitter.submit(job.task_id)
        return [job.task_id for job in stale]


def _instant_us(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000)
    except ValueError:
        return 0
