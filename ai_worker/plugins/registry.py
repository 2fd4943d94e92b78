"""Find model plugins: Python entry points of group `interop.models`, plus configured extras.

An entry point names a callable taking the Settings and returning the plugins it provides:
one for a fixed model, several for the ONNX plugin (one per configured model file). Loading
never downloads anything: a plugin brings its weights, or is pointed at a local file.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from ai_worker.errors import BadInput
from ai_worker.plugins.base import ModelPlugin

GROUP = "interop.models"
log = logging.getLogger("interop.ai")
Provider = Callable[[Any], Iterable[ModelPlugin]]


def _load_target(spec: str) -> Provider:
    module, _, attr = spec.partition(":")
    target: Provider = getattr(importlib.import_module(module), attr)
    return target


class Registry:
    """The plugins of this process, by model name."""

    def __init__(self, plugins: Iterable[ModelPlugin] = ()) -> None:
        self.plugins: dict[str, ModelPlugin] = {}
        for plugin in plugins:
            self.add(plugin)

    def add(self, plugin: ModelPlugin) -> None:
        if not isinstance(plugin, ModelPlugin):
            raise TypeError(f"{plugin!r} does not implement ai_worker.plugins.ModelPlugin")
        self.plugins[plugin.name] = plugin

    @classmethod
    def load(cls, settings: Any) -> Registry:
        providers: list[tuple[str, Provider]] = []
        for ep in entry_points(group=GROUP):
            try:
                providers.append((ep.name, ep.load()))
            except Exception:  # noqa: BLE001 - one broken plugin must not stop the others
                log.exception("cannot load model plugin entry point %s", ep.name)
        for spec in getattr(settings, "ai_extra_plugins", []) or []:
            providers.append((spec, _load_target(spec)))
        registry = cls()
        for name, provide in providers:
            try:
                for plugin in provide(settings):
                    registry.add(plugin)
            except Exception:  # noqa: BLE001
                log.exception("model plugin %s failed to start", name)
        return registry

    def get(self, name: str) -> ModelPlugin:
        plugin = self.plugins.get(name)
        if plugin is None:
            known = ", ".join(sorted(self.plugins)) or "none"
            raise BadInput(f"no model plugin named '{name}' (installed: {known})")
        return plugin

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.plugins.values())
