"""Errors that reach the user as one line (``error: …``) rather than a traceback."""


class QaftError(Exception):
    """Base class of qaft's expected failures (bad input, corrupt file, unknown model)."""
