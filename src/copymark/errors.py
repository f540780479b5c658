"""The one error type users see.

Every bad input (missing file, corrupt image, misspelled config key, exhausted budget, ...)
raises :class:`CopymarkError` with a message naming what was wrong and, where possible, a hint
saying how to fix it. The CLI prints it on one line and exits with status 2 (no traceback
unless ``--debug``).
"""

from __future__ import annotations


class CopymarkError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ImageError(CopymarkError):
    """An image file could not be read, or an image tensor has the wrong shape/mode."""


class DataError(CopymarkError):
    """A dataset folder is missing, empty, or inconsistent (e.g. unmatched pairs)."""


class ConfigError(CopymarkError):
    """A configuration is invalid (unknown key, wrong type, out-of-range value)."""


class WeightsError(CopymarkError):
    """A weight file is missing or does not match the expected architecture."""
