"""Model plugins: the interface, the registry (entry points `interop.models`), the shipped two."""

from ai_worker.plugins.base import (
    CodedFinding,
    Coding,
    Findings,
    KeyImage,
    Measurement,
    ModelPlugin,
    StudyInfo,
)
from ai_worker.plugins.registry import Registry

__all__ = [
    "CodedFinding",
    "Coding",
    "Findings",
    "KeyImage",
    "Measurement",
    "ModelPlugin",
    "Registry",
    "StudyInfo",
]
