"""BodyPartExamined (0018,0015) and Laterality -> SNOMED CT, after DICOM PS3.16 Annex L.

Only the common defined terms are listed; an unknown term is kept as text so nothing is lost.
"""

from __future__ import annotations

from typing import Any

SNOMED = "http://snomed.info/sct"

BODY_PARTS: dict[str, tuple[str, str]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"),
    "CSPINE": ("122494005", "Cervical spine"),
    "CHEST": ("43799004", "Chest"),
    "ELBOW": ("16953009", "Elbow joint"),
    "WHOLEBODY": ("38266002", "Entire body"),
    "FEMUR": ("71341001", "Femur"),
    "FOOT": ("56459004", "Foot"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEADNECK": ("774007", "Head and Neck"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("24136001", "Hip joint"),
    "KIDNEY": ("64033007", "Kidney"),
    "KNEE": ("72696002", "Knee"),
    "LIVER": ("10200004", "Liver"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "LUNG": ("39607008", "Lung"),
    "NECK": ("45048000", "Neck"),
    "PELVIS": ("816092008", "Pelvis"),
    "PROSTATE": ("41216001", "Prostate"),
    "SACRUM": ("54735007", "Sacrum"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKULL": ("89546000", "Skull"),
    "SPINE": ("421060004", "Spine"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "WRIST": ("74670003", "Wrist joint"),
}

LATERALITY: dict[str, tuple[str, str]] = {
    "R": ("24028007", "Right"),
    "L": ("7771000", "Left"),
    "B": ("51440002", "Right and left"),
}


def body_site(term: str) -> dict[str, Any] | None:
    """Coding for a BodyPartExamined term; unknown terms keep their text as display."""
    key = term.strip().upper().replace(" ", "")
    if not key:
        return None
    if key in BODY_PARTS:
        code, display = BODY_PARTS[key]
        return {"system": SNOMED, "code": code, "display": display}
    return {"display": term.strip()}


def laterality(value: str) -> dict[str, Any] | None:
    found = LATERALITY.get(value.strip().upper())
    if found is None:
        return None
    return {"system": SNOMED, "code": found[0], "display": found[1]}
