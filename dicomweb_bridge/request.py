"""A DICOMweb request, parsed: the only shapes the proxy forwards, and the URL it builds.

The proxy never forwards a path it was given. It reads the request into the resource grammar
of PS3.18 (QIDO-RS searches, WADO-RS retrievals, STOW-RS, and DELETE of a study, series or
instance), decides access on the parsed study UID, and writes the upstream path back from the
parsed parts, so nothing a caller sends can reach beyond the PACS's DICOMweb root. Every token
of the grammar is made of letters, digits, dots and commas: a raw path holding anything else
(`%`-escapes such as `%2e%2e` or `%2f`, backslashes, `..`, empty segments) is a 400, and so is
a query parameter that is not a DICOMweb one for that kind of request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword

from fhir_server.errors import FhirError

UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
UID_MAX = 64
FRAME = re.compile(r"[1-9][0-9]{0,8}")
FRAMES_MAX = 10_000
TAG = re.compile(r"[0-9A-Fa-f]{8}")
ITEM = re.compile(r"0|[1-9][0-9]{0,8}")
BULK_DEPTH = 32  # tag / item / tag ... inside nested sequences
QIDO_LEVELS = ("studies", "series", "instances")
VIEWS = ("metadata", "rendered", "thumbnail", "bulkdata")
FRAME_VIEWS = ("rendered", "thumbnail")
PARAMS_MAX = 100
VALUE_MAX = 1024
INT_MAX = 10**9
QIDO_FLAGS = ("fuzzymatching",)
WADO_PARAMS = ("accept", "charset")
RENDERED_PARAMS = ("annotation", "quality", "viewport", "window", "iccprofile")
STOW_PARAMS = ("patient",)  # ours: the patient the stored files are given to; not forwarded
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bad(text: str) -> FhirError:
    return FhirError(400, text, "invalid")


@dataclass(frozen=True, slots=True)
class DicomwebRequest:
    """One parsed request. `search` is the QIDO level ("studies", "series", "instances")
    or None for a retrieval, a STOW or a DELETE; `view` is what is asked of the resource
    (metadata, rendered, thumbnail, bulkdata, frames, bulk) or None for the resource itself."""

    method: str
    study: str | None = None
    series: str | None = None
    instance: str | None = None
    search: str | None = None
    view: str | None = None
    frames: tuple[int, ...] = ()
    frame_view: str | None = None
    bulk: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        """The upstream path, relative to the DICOMweb root, written from the parsed parts."""
        parts: list[str] = []
        if self.study is not None:
            parts += ["studies", self.study]
        if self.series is not None:
            parts += ["series", self.series]
        if self.instance is not None:
            parts += ["instances", self.instance]
        if self.search is not None:
            parts.append(self.search)
        if self.view == "frames":
            parts += ["frames", ",".join(map(str, self.frames))]
            if self.frame_view:
                parts.append(self.frame_view)
        elif self.view == "bulk":
            parts += ["bulk", *self.bulk]
        elif self.view is not None:
            parts.append(self.view)
        return "/".join(parts)

    @property
    def level(self) -> str:
        """The DICOM level the request names: Study, Series or Instance (or the searched one)."""
        if self.instance is not None:
            return "Instance"
        return "Series" if self.series is not None else "Study"

    @property
    def upstream_params(self) -> tuple[tuple[str, str], ...]:
        """The query to forward (STOW's own `patient` stays here)."""
        return tuple((k, v) for k, v in self.params if k not in STOW_PARAMS)


def route_tail(scope: Mapping[str, Any], decoded: str) -> str:
    """The part of the path after `/dicomweb/` as the client sent it, still percent-encoded
    (`{path:path}` is already decoded, so `%2f` would pass for a separator there)."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):
        return decoded
    text = raw.decode("latin-1")
    root = str(scope.get("root_path") or "")
    if root and text.startswith(root):
        text = text[len(root) :]
    prefix = "/dicomweb/"
    if not text.startswith(prefix):
        raise bad("the DICOMweb path must be written plainly, without percent-escapes")
    return text[len(prefix) :]


def parse(method: str, path: str, query: Iterable[tuple[str, str]] = ()) -> DicomwebRequest:
    """The request in the DICOMweb grammar, or a 400 FhirError naming what is wrong."""
    method = method.upper()
    if method not in ("GET", "HEAD", "POST", "DELETE"):
        raise FhirError(405, f"DICOMweb does not take {method}", "not-supported")
    segments = path.split("/")
    for seg in segments:
        if not seg:
            raise bad("empty path segment in the DICOMweb path ('//' or a trailing '/')")
        if not re.fullmatch(r"[0-9A-Za-z.,]+", seg) or seg in (".", ".."):
            raise bad(f"not a DICOMweb path segment: {_show(seg)}")
    found = _resource(segments)
    _allowed(method, found)
    return DicomwebRequest(method=method, **found, params=_params(method, found, query))


def _resource(seg: list[str]) -> dict[str, Any]:
    """studies[/{uid}[/series[/{uid}[/instances[/{uid}]]] | /instances]] | series | instances,
    each resource optionally followed by a view (metadata, rendered, ...)."""
    out: dict[str, Any] = {}
    head = seg[0]
    if head in ("series", "instances"):
        if len(seg) != 1:
            raise bad(f"'/{head}' is a search and takes nothing after it")
        return {"search": head}
    if head != "studies":
        raise bad(f"a DICOMweb path starts with studies, series or instances, not {_show(head)}")
    i = 1
    for level, below in (("study", "series"), ("series", "instances"), ("instance", None)):
        if i == len(seg):  # a search at this level ("studies", ".../series", ".../instances")
            out["search"] = seg[i - 1]
            return out
        out[level] = uid(seg[i], level)
        i += 1
        if i == len(seg):
            return out
        word = seg[i]
        if below is not None and word == below:
            i += 1
            continue
        if level == "study" and word == "instances" and i + 1 == len(seg):
            out["search"] = "instances"  # every instance of the study
            return out
        return _view(out, level, seg[i:])
    raise AssertionError("unreachable")  # pragma: no cover


def _view(out: dict[str, Any], level: str, rest: list[str]) -> dict[str, Any]:
    word = rest[0]
    if word in VIEWS:
        if len(rest) != 1:
            raise bad(f"'{word}' takes nothing after it")
        return {**out, "view": word}
    if level == "instance" and word == "frames":
        if len(rest) < 2 or len(rest) > 3:
            raise bad("frames take a list: frames/1,2,3[/rendered|/thumbnail]")
        frames = frame_list(rest[1])
        if len(rest) == 3 and rest[2] not in FRAME_VIEWS:
            raise bad(f"frames may be followed by rendered or thumbnail, not {_show(rest[2])}")
        return {**out, "view": "frames", "frames": frames,
                "frame_view": rest[2] if len(rest) == 3 else None}  # fmt: skip
    if level == "instance" and word == "bulk":  # the PACS's own BulkDataURI (Orthanc's form)
        path = rest[1:]
        if not path or len(path) > BULK_DEPTH:
            raise bad("bulk takes a tag path: bulk/<tag>[/<item>/<tag>...]")
        for n, part in enumerate(path):
            if not (TAG if n % 2 == 0 else ITEM).fullmatch(part):
                raise bad(f"not a tag path element: {_show(part)}")
        return {**out, "view": "bulk", "bulk": tuple(p.lower() for p in path)}
    raise bad(f"unknown DICOMweb keyword after a {level} UID: {_show(word)}")


def uid(text: str, what: str = "UID") -> str:
    """A DICOM UID (PS3.5 9.1): digits and dots, no leading zeros, at most 64 characters."""
    if len(text) > UID_MAX or not UID.fullmatch(text):
        raise bad(f"not a DICOM {what} UID: {_show(text)}")
    return text


def frame_list(text: str) -> tuple[int, ...]:
    items = text.split(",")
    if len(items) > FRAMES_MAX or not all(FRAME.fullmatch(i) for i in items):
        raise bad(f"a frame list is positive numbers separated by commas, not {_show(text)}")
    return tuple(int(i) for i in items)


def _allowed(method: str, found: dict[str, Any]) -> None:
    if method in ("GET", "HEAD"):
        return
    if method == "POST":  # STOW-RS: studies or studies/{uid}
        if not (found.get("search") == "studies" or set(found) == {"study"}):
            raise bad("STOW-RS stores to studies or studies/<uid>")
        return
    if found.get("search") or found.get("view") or "study" not in found:  # DELETE
        raise bad("DELETE takes studies/<uid>[/series/<uid>[/instances/<uid>]]")


def _params(
    method: str, found: dict[str, Any], query: Iterable[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """The query, checked key by key against what this kind of request takes."""
    items = list(query)
    if len(items) > PARAMS_MAX:
        raise bad(f"at most {PARAMS_MAX} query parameters")
    out = []
    for key, value in items:
        if len(value) > VALUE_MAX or CONTROL.search(value):
            raise bad(f"query parameter {_show(key)}: value too long or with control characters")
        if method == "POST":
            ok = key in STOW_PARAMS
        elif method == "DELETE":
            ok = False
        elif found.get("search"):
            ok = _qido_param(key, value)
        else:
            ok = key in WADO_PARAMS or (
                key in RENDERED_PARAMS
                and (found.get("view") in FRAME_VIEWS or found.get("frame_view") is not None)
            )
        if not ok:
            raise bad(f"query parameter {_show(key)}={_show(value)} is not taken here")
        out.append((key, value))
    return tuple(out)


def _qido_param(key: str, value: str) -> bool:
    if key in ("limit", "offset"):
        return value.isascii() and value.isdigit() and int(value) <= INT_MAX
    if key in QIDO_FLAGS:
        return value in ("true", "false")
    if key == "includefield":
        return value == "all" or all(attribute(a) for a in value.split(","))
    return attribute(key)


def attribute(text: str) -> bool:
    """An attribute ID: a keyword or a tag, or a dotted path of them into sequences."""
    parts = text.split(".")
    return len(parts) <= 8 and all(
        TAG.fullmatch(p) or (p.isascii() and p.isalnum() and tag_for_keyword(p) is not None)
        for p in parts
    )


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
