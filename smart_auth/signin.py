"""Signing a person in with a password, throttled; and the CSRF comparison of a form's token.

One rule for every page where a user types a password (the SMART login page, the operator
console): wrong passwords are throttled per user name and per client address with doubling
lockouts, a locked name or address is refused before the password is looked at, and unknown
names are throttled alike (`smart_auth.throttle`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from smart_auth.config import AuthConfig
from smart_auth.registry import Registry, User
from smart_auth.throttle import Backoff, Throttle


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in's outcome: the user, or how long to wait (0: the password was wrong)."""

    user: User | None
    wait: int = 0


class SignIn:
    def __init__(self, registry: Registry, config: AuthConfig) -> None:
        self.registry = registry
        self.throttle = Throttle(registry.engine)
        self.user_backoff = Backoff(
            config.login_free_attempts, config.login_lockout_seconds,
            config.login_max_lockout_seconds,
        )  # fmt: skip
        self.address_backoff = Backoff(
            config.login_address_free_attempts, config.login_lockout_seconds,
            config.login_max_lockout_seconds,
        )  # fmt: skip

    def attempt(self, username: str, password: str, address: str) -> Attempt:
        username = username.replace("\x00", "")[:128]
        user_key, address_key = f"login-user:{username}", f"login-address:{address}"
        wait = self.throttle.locked([user_key, address_key])
        if wait:
            return Attempt(None, wait)
        user = self.registry.login(username, password)
        if user is None:
            wait = self.throttle.failed(
                [(user_key, self.user_backoff), (address_key, self.address_backoff)]
            )
            return Attempt(None, wait)
        self.throttle.reset(user_key)
        return Attempt(user)


def same_token(presented: str | None, expected: str | None) -> bool:
    """Whether a form's CSRF token is the expected one (constant time; empty never matches)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
