"""Secrets at rest: the signing keys' private halves are sealed with a key the operator holds.

The sealing key lives in a file (INTEROP_SECRET_KEY_FILE; base64 of 32 random bytes, e.g.
`openssl rand -base64 32`), never in the database, so a copy of the database (a backup, a
replica, a dump) does not hold usable private keys. The embedded default creates the file under
./var/ with mode 0600 on first start. A file that group or others may access is refused, and so
is a key that cannot open the sealed rows: the server will not start rather than sign with keys
it cannot trust.

Sealed values are `aesgcm:` + base64url(nonce || ciphertext), with the row's identity (the
key id) as associated data, so a sealed value moved to another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "aesgcm:"


class SealingError(RuntimeError):
    """The sealing key is missing, exposed or wrong; the message says what to do."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: str, create: bool = True) -> Sealer:
        return cls(load_key(path, create))

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> bytes:
        if not is_sealed(value):
            raise SealingError(f"{context}: the stored value is not sealed")
        try:
            raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except (InvalidTag, ValueError, binascii.Error):
            raise SealingError(
                f"the signing key {context} cannot be decrypted with this secret key file: "
                "set INTEROP_SECRET_KEY_FILE to the file used when the keys were made "
                "(every replica needs the same file)"
            ) from None


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def load_key(path: str, create: bool = True) -> bytes:
    """The 32-byte key in `path`; made (mode 0600) when the file does not exist yet."""
    if not path:
        raise SealingError("no secret key file is configured (INTEROP_SECRET_KEY_FILE)")
    file = Path(path)
    if not file.exists():
        if not create:
            raise SealingError(f"the secret key file {file} does not exist")
        _create(file)
    mode = file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SealingError(
            f"the secret key file {file} may be read or changed by other users "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {file}"
        )
    try:
        key = base64.b64decode(file.read_text().strip(), validate=True)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        key = b""
    if len(key) != 32:
        raise SealingError(
            f"the secret key file {file} must hold 32 random bytes in base64 "
            "(openssl rand -base64 32)"
        )
    return key


def _create(file: Path) -> None:
    """Write a new key atomically: a half-written file is never seen, and of two processes
    starting at once, the first to link its file wins and the other reads it."""
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{secrets.token_hex(6)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        os.link(temporary, file)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
