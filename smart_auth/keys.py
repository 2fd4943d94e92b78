"""The server's signing keys: RS256, created on first start, persisted, rotatable.

Only the newest key signs; retired keys stay published in the JWKS so tokens signed before a
rotation still verify until they expire. Keys are cached in memory (signing and verification
never touch the database); a token with an unknown `kid` triggers one reload, so a rotation
done by another process (`interop keys rotate`) is picked up.

Private keys are stored sealed with the operator's secret key (smart_auth/sealing.py); a key
an earlier version stored in clear is sealed in place the first time it is read.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from joserfc.jwk import KeyParameters, KeySet, RSAKey
from sqlalchemy import Engine, insert, select, update

from fhir_server.store.db import write_transaction
from smart_auth.models import signing_keys
from smart_auth.sealing import Sealer, is_sealed

ALG = "RS256"
RELOAD_INTERVAL = 30.0


class KeyStore:
    def __init__(self, engine: Engine, sealer: Sealer) -> None:
        self.engine = engine
        self.sealer = sealer
        self._lock = threading.Lock()
        self._keys: dict[str, RSAKey] = {}
        self._current: str | None = None
        self._loaded_at = 0.0

    def load(self) -> None:
        """Read the keys; create the first one when there is none."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    signing_keys.c.kid, signing_keys.c.private_pem, signing_keys.c.retired
                ).order_by(signing_keys.c.created, signing_keys.c.kid)
            ).all()
        if not rows:
            self.rotate()
            return
        keys = {
            kid: RSAKey.import_key(self._unseal(kid, stored), parameters=_parameters(kid))
            for kid, stored, _ in rows
        }
        active = [kid for kid, _, retired in rows if retired is None]
        with self._lock:
            self._keys.update(keys)
            self._current = active[-1] if active else rows[-1][0]
            self._loaded_at = time.monotonic()

    def describe(self) -> list[dict[str, Any]]:
        """Each key's id, algorithm and dates (never the key itself), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    signing_keys.c.kid, signing_keys.c.alg, signing_keys.c.created,
                    signing_keys.c.retired,
                ).order_by(signing_keys.c.created, signing_keys.c.kid)
            ).all()  # fmt: skip
        return [
            {"kid": kid, "alg": alg, "created": created, "retired": retired,
             "signing": retired is None}
            for kid, alg, created, retired in rows
        ]  # fmt: skip

    def rotate(self) -> str:
        """Make a new signing key; the previous ones are retired but kept for verification."""
        kid = secrets.token_hex(8)
        key = RSAKey.generate_key(2048, parameters=_parameters(kid))
        now = int(time.time())
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(signing_keys).where(signing_keys.c.retired.is_(None)).values(retired=now)
            )
            conn.execute(
                insert(signing_keys).values(
                    kid=kid,
                    alg=ALG,
                    private_pem=self.sealer.seal(key.as_pem(private=True), kid),
                    created=now,
                )
            )
        with self._lock:
            self._keys[kid] = key
            self._current = kid
            self._loaded_at = time.monotonic()
        return kid

    def _unseal(self, kid: str, stored: str) -> bytes:
        """The private PEM; a clear one (stored by an earlier version) is sealed in place."""
        if is_sealed(stored):
            return self.sealer.open(stored, kid)
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == kid, signing_keys.c.private_pem == stored)
                .values(private_pem=self.sealer.seal(stored.encode(), kid))
            )
        return stored.encode()

    def signing_key(self) -> RSAKey:
        """The newest key; re-read now and then so a rotation elsewhere takes over signing."""
        if self._current is None or time.monotonic() - self._loaded_at > RELOAD_INTERVAL:
            self.load()
        assert self._current is not None
        return self._keys[self._current]

    def verification_key(self, kid: str) -> RSAKey | None:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > 1.0:
            self.load()
            key = self._keys.get(kid)
        return key

    def key_set(self) -> KeySet:
        return KeySet(list(self._keys.values()))

    def jwks(self) -> dict[str, Any]:
        if time.monotonic() - self._loaded_at > RELOAD_INTERVAL:
            self.load()
        return {"keys": [k.as_dict(private=False) for k in self._keys.values()]}


def _parameters(kid: str) -> KeyParameters:
    return {"kid": kid, "alg": ALG, "use": "sig"}
