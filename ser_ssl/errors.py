"""Errors a user can cause and fix. Their messages name the file or setting and the fix; the
``ser-ssl`` command prints just the message instead of a traceback."""


class UserError(Exception):
    """Base of every error that is about the user's input rather than a bug."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (out of range, or inconsistent with another one)."""


class DataError(UserError, ValueError):
    """A data set, manifest or clip that cannot be used."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the run needs does not exist."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or exported model that cannot provide what is asked of it; the message names the
    file and the fix."""
