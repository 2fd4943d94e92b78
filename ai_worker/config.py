"""The AI worker's view of the operator's settings (built by `interop.runtime`).

Model plugins receive it in `provide(config)` (entry points `interop.models`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr


@dataclass(frozen=True)
class AiConfig:
    redis_url: str = ""  # empty: jobs run in this process
    dicomweb_url: str = ""
    orthanc_user: str = ""
    orthanc_password: SecretStr = SecretStr("")
    ai_rules: list[dict[str, Any]] = field(default_factory=list)
    ai_onnx_models: list[dict[str, Any]] = field(default_factory=list)
    ai_extra_plugins: list[str] = field(default_factory=list)
    ai_worker_threads: int = 1
    ai_queues: str = "ai.decode,ai.infer,bulk,outbox"
    effective_ai_cache_dir: str = ""
    ai_lease_seconds: float = 120.0
    ai_max_retries: int = 5
    ai_retry_backoff: float = 10.0
    ai_visibility_timeout: int = 3600
    lease_seconds: float = 30.0  # how often the sweeper looks for jobs nobody works on
