"""Profiles a resource claims (`meta.profile`): US Core 5.0.1 out of the box, and any
StructureDefinition an operator stores (PUT, `interop import`), in effect without a restart.

What a profile adds to the R4 base check, per element of its snapshot (or of its
differential laid over its base): cardinality (`min`/`max`, so must-have elements), types,
bindings (required ones refuse, with the profile's value set), `fixed[x]` and `pattern[x]`
values, its invariants and its slices (by value, pattern, exists, type and profile
discriminators, their paths through resolve(), ofType() and extension('url'); re-slices and
slicings inside slices: fhir_server.validation.structure, checker._judge), an Extension
slice checked against the extension's own profile when the server knows it.

Stored definitions are cached per process; a write of a StructureDefinition, ValueSet or
CodeSystem through this process clears the cache (`changed()`), other processes see it within
`TTL_SECONDS`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import resources as importlib_resources
from typing import TYPE_CHECKING, Any, Protocol

from fhir_server.validation.structure import attach_slices, collect_slices, reduce

if TYPE_CHECKING:
    from fhir_server.validation.checker import Compiled, Run
    from fhir_server.validation.valuesets import Codes

BASE = "http://hl7.org/fhir/StructureDefinition/"
TTL_SECONDS = 5.0
UNKNOWN_PROFILE_CHOICES = ("accept", "warn", "refuse")
_NOT_REUSABLE = object()  # a cached profile that a recheck always compiles again


class Conformance(Protocol):
    """Stored conformance resources, as the current transaction sees them."""

    def structure_definition(self, url: str) -> dict[str, Any] | None: ...

    def value_set_codes(self, url: str) -> Codes | None: ...


@dataclass
class _Settings:
    unknown_profile: str = "warn"


_settings = _Settings()


def configure(unknown_profile: str) -> None:
    """What a resource claiming a profile the server does not know gets: `accept` (silently),
    `warn` (accepted; `$validate` warns), `refuse` (400)."""
    if unknown_profile not in UNKNOWN_PROFILE_CHOICES:
        raise ValueError(f"unknown_profile must be one of {UNKNOWN_PROFILE_CHOICES}")
    _settings.unknown_profile = unknown_profile


@cache
def builtin() -> dict[str, dict[str, Any]]:
    text = importlib_resources.files("fhir_server.validation").joinpath("data", "uscore.json")
    data = json.loads(text.read_text(encoding="utf-8"))
    return {p["url"]: p for p in data["profiles"]}


@dataclass
class Profiles:
    # url -> (compiled or None, expiry, the stored definition it came from; see `compiled`)
    cache: dict[str, tuple[Compiled | None, float, Any]] = field(default_factory=dict)
    codes: dict[str, tuple[Codes | None, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    # (kind, url) whose expired entry one thread is rechecking now; the others keep using
    # the entry meanwhile instead of all sending the same query at once
    rechecking: set[tuple[str, str]] = field(default_factory=set)

    def _recheck_claimed(self, kind: str, url: str) -> bool:
        with self.lock:
            if (kind, url) in self.rechecking:
                return False
            self.rechecking.add((kind, url))
            return True

    def _recheck_done(self, kind: str, url: str) -> None:
        with self.lock:
            self.rechecking.discard((kind, url))

    def changed(self) -> None:
        with self.lock:
            self.cache.clear()
            self.codes.clear()
            self.generation += 1

    def value_set_codes(self, url: str, conformance: Conformance) -> Codes | None:
        """A stored value set's codes, cached like profiles (None cached too: a binding to
        an external value set must not cost a query per element)."""
        now = time.monotonic()
        found = self.codes.get(url)
        if found is not None and found[1] > now:
            return found[0]
        if found is not None and not self._recheck_claimed("codes", url):
            return found[0]
        try:
            codes = conformance.value_set_codes(url)
            with self.lock:
                self.codes[url] = (codes, now + TTL_SECONDS)
        finally:
            if found is not None:
                self._recheck_done("codes", url)
        return codes

    def compiled(self, url: str, conformance: Conformance | None) -> Compiled | None:
        """The compiled profile, rechecked against the stored definitions every TTL_SECONDS.
        A recheck that finds the same definition (or again none: the built-in one) keeps
        the compiled checkers and what they compiled lazily, instead of starting over."""
        now = time.monotonic()
        found = self.cache.get(url)
        if found is not None and (found[1] > now or conformance is None):
            return found[0]
        if found is not None and not self._recheck_claimed("profile", url):
            return found[0]
        try:
            return self._compile(url, conformance, found, now)
        finally:
            if found is not None:
                self._recheck_done("profile", url)

    def _compile(
        self, url: str, conformance: Conformance | None, found: Any, now: float
    ) -> Compiled | None:
        sd = conformance.structure_definition(url) if conformance is not None else None
        if found is not None and found[2] is not _NOT_REUSABLE and found[2] == sd:
            compiled = found[0]
        else:
            reduced = self._reduce(url, sd, conformance, 0)
            compiled = None
            if reduced is not None:
                from fhir_server.validation import base
                from fhir_server.validation.checker import Compiled

                compiled = Compiled(base().defs, reduced, base())
        # what the result depends on: the stored definition when it has a snapshot (a
        # differential one also depends on its stored base, which is not compared)
        source = sd if sd is None or sd.get("snapshot", {}).get("element") else _NOT_REUSABLE
        with self.lock:
            self.cache[url] = (compiled, now + TTL_SECONDS, source)
        return compiled

    def reduced(self, url: str, conformance: Conformance | None, depth: int) -> Any:
        sd = conformance.structure_definition(url) if conformance is not None else None
        return self._reduce(url, sd, conformance, depth)

    def _reduce(
        self, url: str, sd: dict[str, Any] | None, conformance: Conformance | None, depth: int
    ) -> Any:
        if sd is None:
            return builtin().get(url)
        if depth > 10 or sd.get("kind") not in ("resource", "complex-type"):
            return None
        if sd.get("snapshot", {}).get("element"):
            return reduce(sd, profile_types={u: d["type"] for u, d in builtin().items()})
        parent_url = str(sd.get("baseDefinition", "")).split("|")[0]
        if parent_url.startswith(BASE):
            from fhir_server.validation import definitions

            parent = definitions().types.get(parent_url[len(BASE) :])
        else:
            parent = self.reduced(parent_url, conformance, depth + 1)
        if parent is None:
            return None
        return overlay(parent, sd)

    def compiled_for(self, url: str, run: Run) -> Compiled | None:
        """The compiled profile `url` (a resource's or a data type's, e.g. an Extension's),
        with the stored definitions `run` sees; None when unknown."""
        compiled = self.compiled(url.split("|", 1)[0], run.conformance)
        return compiled if compiled is not None and compiled.profile is not None else None

    def check_value(self, url: str, value: Any, path: str, run: Run, note: str = "") -> int:
        """Check `value` (at `path`) against the known profile `url`, its problems added to
        `run` (naming the profile); returns how many errors it has."""
        compiled = self.compiled_for(url, run)
        if compiled is None:
            return 0
        assert compiled.profile is not None
        res_type = compiled.profile["type"]
        if compiled.profile.get("kind") == "resource" and (
            type(value) is not dict or value.get("resourceType") != res_type
        ):
            run.error("structure", path, f"not a {res_type}, as the profile {url} is {note}")
            return 1
        before = len(run.issues)
        outer = run.resource, run.root
        if type(value) is dict and "resourceType" in value:
            run.resource = run.root = value
        try:
            compiled.type_check(res_type)(value, path, run)
        finally:
            run.resource, run.root = outer
        errors, named = 0, f"(profile {url}{' ' + note if note else ''})"
        for i in range(before, len(run.issues)):
            issue = run.issues[i]
            errors += issue.severity == "error"
            run.issues[i] = type(issue)(issue.severity, issue.code, issue.expression,
                                        f"{issue.diagnostics} {named}")  # fmt: skip
        return errors

    def conforms(self, url: str, value: Any, run: Run) -> bool:
        """Does `value` conform to the known profile `url` (a `profile` discriminator)?
        An unknown profile: no."""
        if self.compiled_for(url, run) is None:
            return False
        from fhir_server.validation.checker import Run as Fresh

        trial = Fresh(conformance=run.conformance, resource=run.resource, root=run.root,
                      bundle=run.bundle, resolved=run.resolved)  # fmt: skip
        return self.check_value(url, value, "", trial) == 0

    def check(
        self,
        url: str,
        resource: dict[str, Any],
        run: Run,
        conformance: Conformance | None,
        claimed: bool,
    ) -> None:
        url = url.split("|", 1)[0]
        res_type = resource["resourceType"]
        if url == BASE + res_type:
            return  # the base definition: already checked
        compiled = self.compiled(url, conformance)
        where = f"{res_type}.meta.profile" if claimed else res_type
        if compiled is None or compiled.profile is None:
            policy = _settings.unknown_profile if claimed else "refuse"
            text = f"the profile {url} is not known to this server"
            if policy == "refuse":
                run.error("not-supported", where, text)
            elif policy == "warn" and run.warnings:  # a write keeps errors only
                run.warn("not-supported", where, text + " (not checked)")
            return
        if compiled.profile["type"] != res_type:
            run.error("invalid", where, f"the profile {url} is for {compiled.profile['type']}, "
                      f"not {res_type}")  # fmt: skip
            return
        before = len(run.issues)
        compiled.delta().type_check(res_type)(resource, res_type, run)  # after the base walk
        for i in range(before, len(run.issues)):
            issue = run.issues[i]
            run.issues[i] = type(issue)(issue.severity, issue.code, issue.expression,
                                        f"{issue.diagnostics} (profile {url})")  # fmt: skip


def overlay(parent: dict[str, Any], sd: dict[str, Any]) -> dict[str, Any]:
    """A differential-only StructureDefinition laid over its parent's reduced definition
    (its slices too: slicing and slices are declared in the differential)."""
    nodes = {path: {k: dict(v) for k, v in node.items()} for path, node in parent["nodes"].items()}
    constraints = {k: list(v) for k, v in parent.get("constraints", {}).items()}
    root = parent["type"]
    elements = sd.get("differential", {}).get("element", []) or []
    for el in elements:
        el_id = str(el.get("id", el.get("path", "")))
        path = str(el.get("path", ""))
        if ":" in el_id or not path.startswith(root):
            continue
        for c in el.get("constraint", []) or []:
            if c.get("expression"):
                constraints.setdefault(path, []).append(
                    [c.get("key", ""), c.get("severity", "error"), c["expression"],
                     c.get("human", "")])  # fmt: skip
        if path == root:
            continue
        parent_path, _, name = path.rpartition(".")
        name = name.removesuffix("[x]")
        spec = nodes.get(parent_path, {}).get(name)
        if spec is None:
            continue
        if "min" in el:
            spec["min"] = int(el["min"])
        if "max" in el:
            spec["max"] = -1 if el["max"] == "*" else int(el["max"])
        binding = el.get("binding") or {}
        if binding.get("valueSet") and binding.get("strength") in ("required", "extensible",
                                                                     "preferred"):  # fmt: skip
            spec["binding"] = [binding["strength"], str(binding["valueSet"]).split("|")[0]]
        for key, value in el.items():
            if key.startswith("fixed"):
                spec["fixed"] = value
            elif key.startswith("pattern"):
                spec["pattern"] = value
    attach_slices(nodes, *collect_slices(elements))
    return {**parent, "url": sd.get("url", ""), "nodes": nodes, "constraints": constraints}


@dataclass(frozen=True)
class Cached:
    """A transaction's Conformance behind the process-wide caches."""

    inner: Conformance

    def structure_definition(self, url: str) -> dict[str, Any] | None:
        return self.inner.structure_definition(url)

    def value_set_codes(self, url: str) -> Codes | None:
        return profiles().value_set_codes(url, self.inner)

    def resource(self, reference: str) -> dict[str, Any] | None:
        """A stored resource a reference names (`resolve()` in a discriminator), when the
        store offers lookups; not cached beyond the validation (it may change)."""
        lookup = getattr(self.inner, "resource", None)
        return lookup(reference) if lookup is not None else None


@cache
def profiles() -> Profiles:
    return Profiles()
