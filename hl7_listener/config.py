"""The listener's view of the operator's settings (built by `interop.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hl7Config:
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575  # 0: no listener
    mllp_ack_mode: str = "map"
    mllp_max_frame: int = 10 * 1024 * 1024
    mllp_idle_timeout: float = 300.0
    mllp_max_connections: int = 64
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    mllp_tls_ca: str = ""
    hl7_time_zone: str = "UTC"
    hl7_authorities: dict[str, str] = field(default_factory=dict)
    hl7_mapping_workers: int = 4
    # a stored message is the storing process's to map for 4 leases; after that (the process
    # died) any listener's pending sweep claims it (fhir_server.store.work)
    lease_seconds: float = 30.0
