"""The errors rnnkit raises for user mistakes; `cli` turns them into one-line messages (exit 2)."""


class RnnkitError(Exception):
    """Base class: a mistake in the user's input, configuration or files, not a bug."""


class ConfigError(RnnkitError, ValueError):
    """An option or configuration value is invalid (e.g. ``dropout must be in [0, 1), got 1.5``)."""


class DataError(RnnkitError, ValueError):
    """A data file is missing, empty, undecodable or malformed; the message names the file."""


class CheckpointError(RnnkitError):
    """A model folder is missing files, has corrupted ones, or does not match the request."""


class TrainingError(RnnkitError):
    """Training cannot go on (the loss became NaN or diverged); the last good model is kept."""
