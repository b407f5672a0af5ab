"""Errors that reach the user as one line (``error: …``) rather than a traceback.

The command-line tools catch :class:`QaftError` and ``OSError`` only: anything else is a bug
and keeps its traceback."""


class QaftError(Exception):
    """Base class of qaft's expected failures (bad input, corrupt file, unknown model)."""


class ConfigError(QaftError, ValueError):
    """A setting outside what the code accepts (a training schedule, a quantizer option)."""


class FormatError(QaftError, ValueError):
    """Data that does not have the form its reader expects (tables, graphs, archives)."""
