"""The two kinds of failure a job can meet, because they are handled in opposite ways.

A `TransientError` (PACS down, database busy) is retried with backoff: the same input will
work later. A `BadInput` (no pixel data, an unsupported syntax, a study the model refuses)
fails the Task at once with the reason in `statusReason`: retrying cannot help.
"""

from __future__ import annotations


class AiError(Exception):
    """Base of every error the AI worker raises on purpose."""


class TransientError(AiError):
    """Worth retrying later: the input is fine, a peer or resource is not (yet)."""


class BadInput(AiError):
    """The study (or the request) cannot be analysed; retrying would fail the same way."""


class MissingDecoder(BadInput):
    """The transfer syntax needs a decoder plugin that is not installed; names the package."""
