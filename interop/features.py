"""Optional features and the extras that install them (pyproject `[project.optional-dependencies]`).

A FHIR + HL7 user runs the server without the AI stack; a feature whose packages are missing is
switched off with one log line naming the extra, or refused with one line when the operator
asked for it explicitly (a setting that needs it, a command that is only that feature).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    extra: str
    modules: tuple[str, ...]
    what: str

    def missing(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None]

    @property
    def available(self) -> bool:
        return not self.missing()

    def hint(self) -> str:
        return (
            f"{self.what} needs the '{self.extra}' extra (missing: {', '.join(self.missing())}): "
            f"INTEROP_EXTRAS={self.extra} ./scripts/serve, "
            f"or pip install 'interop-server[{self.extra}]'"
        )


AI = Feature("ai", "ai", ("numpy", "pylibjpeg", "dicomweb_client"), "the AI worker")
IMAGING_UPLOAD = Feature(
    "imaging", "imaging", ("dicomweb_client",), "storing DICOM in the PACS (STOW-RS)"
)
WORKER = Feature("worker", "worker", ("celery", "redis"), "Celery jobs (INTEROP_REDIS_URL)")
OPENEMR_DB = Feature(
    "openemr-db", "openemr-db", ("pymysql",), "reading OpenEMR's MariaDB (INTEROP_OPENEMR_SOURCE)"
)
ALL = (AI, IMAGING_UPLOAD, WORKER, OPENEMR_DB)


class FeatureMissing(RuntimeError):
    """A setting or command needs an extra that is not installed (the message says which)."""


def require(feature: Feature) -> None:
    if not feature.available:
        raise FeatureMissing(feature.hint())


def required_by(settings: object) -> list[Feature]:
    """The features the operator's settings ask for (they cannot be silently off)."""
    needed = []
    if getattr(settings, "redis_url", ""):
        needed.append(WORKER)
    if getattr(settings, "openemr_source", "api") == "db":
        needed.append(OPENEMR_DB)
    return needed
