"""User-facing errors: one line that names the file, field or line, and the fix."""


class GenrecError(Exception):
    """An error caused by the user's input; the CLI prints it as one line without a traceback."""


class ConfigError(GenrecError):
    """A benchmark YAML that cannot be used."""


class DataError(GenrecError):
    """A data set that is missing, malformed or empty."""


class PluginError(GenrecError):
    """A plugin that cannot be loaded, is unknown, or registers a duplicate name."""


class TrainingError(GenrecError):
    """Training that cannot go on (a NaN loss, an empty training set)."""
