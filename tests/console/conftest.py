"""The console tests' fixtures live in tests/console_support.py (the refusal tests in
tests/security use them too)."""

from console_support import (  # noqa: F401 - fixtures
    admin,
    anonymous,
    console_app,
    console_session_app,
    operator,
    users,
)
