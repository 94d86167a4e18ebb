"""The ShortlistError tree: every user-facing failure, each knowing its HTTP status."""

from __future__ import annotations


class ShortlistError(Exception):
    """Base of every error a user can cause; the CLI prints it without a traceback."""

    http_status = 400


class ConfigError(ShortlistError):
    """A setting in shortlist.toml, the environment or a flag is invalid."""

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class DataError(ShortlistError):
    """Input data is missing or malformed; names the file, line and column where known."""

    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ):
        where = ":".join(str(p) for p in (file, line) if p is not None)
        if column:
            where = f"{where} column '{column}'" if where else f"column '{column}'"
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.line, self.column = file, line, column


class WorkspaceError(ShortlistError):
    """The workspace lacks what a command needs (e.g. nothing ingested yet)."""

    http_status = 409


class NotFoundError(ShortlistError):
    """An id (user, item) is not known to the workspace."""

    http_status = 404


class RequestError(ShortlistError):
    """A request (its context, parameters or filters) names an unknown value or an impossible
    one; the message names the field and the value."""

    http_status = 422

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class FilterError(RequestError):
    """A request's attribute filter is malformed; names the offending field."""

    def __init__(self, message: str, *, field: str | None = None):
        ShortlistError.__init__(
            self, f"filter field '{field}': {message}" if field else f"filter: {message}"
        )
        self.field = field


class StoreUnavailable(ShortlistError):
    """A store the command needs (the online store's Redis, say) cannot be reached or refused
    the request; the message names it and what to check."""

    http_status = 503
