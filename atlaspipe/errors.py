"""Errors that reach a user as one clear line, never as a traceback."""

from __future__ import annotations


class AtlaspipeError(Exception):
    """Base class for every error that atlaspipe reports to a user."""

    exit_code = 2


class ConfigError(AtlaspipeError):
    """A configuration value, file or command-line option is invalid."""


class CatalogError(AtlaspipeError):
    """An unknown release or sample, or a file name no catalog recognises."""


class InputError(AtlaspipeError):
    """An input file cannot be used; the message names the file and, where known, the field."""

    def __init__(self, source: str, reason: str, field: str | None = None) -> None:
        self.source = source
        self.reason = reason
        self.field = field
        where = f"{source}: branch '{field}'" if field else source
        super().__init__(f"{where}: {reason}")


class RunFailedError(AtlaspipeError):
    """A run finished with failed chunks and partial results were not allowed."""

    exit_code = 1


class SchemaError(AtlaspipeError):
    """A stored document (results, status, plan…) does not match the model this version reads."""


class BackendUnavailable(AtlaspipeError):
    """The result backend holding the run records cannot be reached."""
