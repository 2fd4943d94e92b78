"""The outbox consumer "openemr-push": every created or updated Patient goes to push_patient.

Delivery is at least once and push_patient is idempotent. OpenEMR being down (or refusing our
token) raises, so the runner keeps the change and retries with backoff; data OpenEMR would
refuse is recorded on the Patient as a pending tag and the change is done.
"""

from __future__ import annotations

import logging
from typing import Any

from fhir_server.store.outbox import Change
from fhir_server.store.repository import HasStore
from mappers.openemr import Systems
from openemr_bridge.client import OpenEmrClient
from openemr_bridge.config import BridgeSettings
from openemr_bridge.push import push_patient

log = logging.getLogger("interop.openemr")
CONSUMER = "openemr-push"


class PushConsumer:
    def __init__(self, ctx: HasStore, client: OpenEmrClient, systems: Systems) -> None:
        self.ctx = ctx
        self.client = client
        self.systems = systems

    def __call__(self, change: Change) -> None:
        if change.res_type != "Patient" or change.interaction == "delete":
            return
        result = push_patient(self.ctx, self.client, self.systems, change.res_id)
        if result.status == "pending":
            log.info("Patient/%s not created in OpenEMR: %s", change.res_id, result.reason)


def register(runner: Any, settings: BridgeSettings, ctx: HasStore) -> bool:
    """Register the consumer on the outbox runner when the bridge may create patients."""
    if not (settings.openemr_url and settings.openemr_push and settings.openemr_username):
        return False
    from openemr_bridge import setup

    consumer = PushConsumer(ctx, setup.client(settings), setup.systems(settings))
    runner.register(CONSUMER, consumer, types={"Patient"}, batch=50)
    return True
