"""The SMART policy applied to DICOMweb: ImagingStudy scopes decide, compartments confine.

A DICOMweb request names studies by StudyInstanceUID, the FHIR side by ImagingStudy; the
bridge between them is a FHIR search for the study's identifier made *with the caller's
access*, so every rule the FHIR API applies (patient compartment, scope queries) applies here
unchanged: a study the caller could not find through FHIR does not exist for it here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.store.repository import FhirReads
from mappers.dicom.study import UID_SYSTEM


def forbidden(text: str) -> FhirError:
    return FhirError(403, text, "forbidden")


@dataclass
class Caller:
    """One request's view: `access` is None when auth is off (everything allowed)."""

    reads: FhirReads  # FHIR searches with this caller's access (the same rules as REST)
    access: Any = None
    grant: Any = None

    @classmethod
    def of(cls, reads: FhirReads, policy: Any, access_for: Callable[[Any], Any] | None,
           authorization: str | None) -> Caller:  # fmt: skip
        grant = policy.check(["ImagingStudy"], authorization)
        if grant is None or access_for is None:
            return cls(reads)
        access = access_for(grant)
        return cls(reads.with_access(access), access, grant)

    def limited(self, perm: str) -> bool:
        """Raise 403 without the permission; True when confined to a compartment or query."""
        if self.access is None:
            return False
        return bool(self.access.decide(perm, "ImagingStudy").limited)

    def patient(self, perm: str) -> str | None:
        """The one patient a confined grant may act for (writes are judged by it): None when
        unconfined, or when confined only by a scope query (no patient to write for)."""
        if self.access is None:
            return None
        decision = self.access.decide(perm, "ImagingStudy")
        if not decision.limited:
            return None
        patients = {patient for patient, _ in decision.alternatives if patient is not None}
        return patients.pop() if len(patients) == 1 else None

    def require_unconfined(self, perm: str, why: str) -> None:
        if self.access is not None:
            self.access.require_unconfined(perm, "ImagingStudy", why)

    def visible(self, study_uids: Iterable[str]) -> set[str]:
        """The studies among these whose ImagingStudy this caller may see."""
        uids = sorted({u for u in study_uids if u})
        seen: set[str] = set()
        for start in range(0, len(uids), 100):
            chunk = uids[start : start + 100]
            value = ",".join(f"{UID_SYSTEM}|urn:oid:{u}" for u in chunk)
            query = [("identifier", value), ("_count", str(len(chunk)))]
            found = self.reads.search("ImagingStudy", query)
            for res in found:
                for ident in res.get("identifier", []):
                    if ident.get("system") == UID_SYSTEM:
                        seen.add(str(ident.get("value", ""))[8:])
        return seen & set(uids)

    def require_study(self, perm: str, study_uid: str) -> None:
        if self.limited(perm) and study_uid not in self.visible([study_uid]):
            raise forbidden(f"study {study_uid} lies outside what the access token may reach")
