"""Model output -> FHIR: Task lifecycle, DiagnosticReport + Observations + Device + Provenance,
and the physician's review. Pure: values in, resources and transaction Bundles out."""

from mappers.ai.findings import CodedFinding, Coding, Findings, KeyImage, Measurement, ModelInfo
from mappers.ai.review import review_bundle
from mappers.ai.tasks import (
    MODEL_SYSTEM,
    device_id,
    device_resource,
    task_failed,
    task_progress,
    task_resource,
)
from mappers.ai.writeback import report_identifier, result_bundle

__all__ = [
    "MODEL_SYSTEM",
    "CodedFinding",
    "Coding",
    "Findings",
    "KeyImage",
    "Measurement",
    "ModelInfo",
    "device_id",
    "device_resource",
    "report_identifier",
    "result_bundle",
    "review_bundle",
    "task_failed",
    "task_progress",
    "task_resource",
]
