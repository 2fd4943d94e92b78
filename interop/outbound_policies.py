"""The operator's outbound settings as one `outbound.Policy` per purpose, for the channels.

Channels get their policy handed in (they never read settings). A URL the operator
configured (the PACS, OpenEMR, accepted launch issuers) is allowed for its own purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from interop.settings import Settings
from outbound import MB, HostList, Policy


@dataclass(frozen=True, slots=True)
class OutboundPolicies:
    import_: Policy
    subscriptions: Policy
    jwks: Policy
    openemr: Policy
    pacs: Policy

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicies:
        def policy(purpose: str, allow: str, **limits: float | int | None) -> Policy:
            return Policy(
                purpose,
                HostList.from_text(allow),
                settings.outbound_listed_only,
                settings.outbound_connect_timeout,
                **limits,  # type: ignore[arg-type]
            )

        hook = settings.subscription_timeout_seconds
        return cls(
            import_=policy(
                "$import", settings.outbound_allow_import, read_timeout=60.0,
                deadline=settings.outbound_import_deadline,
                max_bytes=settings.outbound_import_max_mb * MB, max_redirects=3,
            ),
            subscriptions=policy(
                "Subscription delivery", settings.outbound_allow_subscriptions,
                read_timeout=hook, deadline=hook, max_bytes=1 * MB,
            ),
            jwks=policy(
                "client JWKS", settings.outbound_allow_jwks, read_timeout=5.0,
                deadline=settings.outbound_jwks_deadline, max_bytes=1 * MB, max_redirects=2,
            ),
            openemr=policy(
                "OpenEMR", settings.outbound_allow_openemr,
                read_timeout=settings.openemr_timeout, deadline=settings.openemr_timeout * 4,
                max_bytes=256 * MB,
            ).allowing(settings.openemr_url, *settings.openemr_allowed_iss),
            pacs=policy(
                "PACS", settings.outbound_allow_pacs, read_timeout=600.0, deadline=None,
                max_bytes=None,
            ).allowing(settings.dicomweb_url, settings.orthanc_url),
        )  # fmt: skip
