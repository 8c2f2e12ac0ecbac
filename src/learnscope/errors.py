"""User-facing errors: one line that names the culprit. The CLI prints it and exits with code 2."""


class LearnscopeError(Exception):
    """Bad input from the user (config, data file, checkpoint, run store), reported as one line."""


class ConfigError(LearnscopeError):
    """An unknown key, a wrong type or an out-of-range value in a config or an override."""


class DataError(LearnscopeError):
    """A missing, truncated or malformed data file, or data that does not fit the model."""


class StoreError(LearnscopeError):
    """A run directory that cannot be used: locked, foreign checkpoint, unreadable files."""
