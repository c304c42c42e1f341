"""Errors a user can fix.

Everything raised as a `HexaError` is printed by the `hexa` command as one clear paragraph
(what went wrong, then what to do), without a traceback. Bugs stay ordinary exceptions.
"""


class HexaError(Exception):
    """A problem with the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message}\nFix: {fix}")


class WeightsNotFoundError(HexaError):
    """No weights for a model were found in any of the places we looked."""


class CheckpointFormatError(HexaError):
    """A checkpoint file has an unexpected layout, keys or shapes."""


class UnsafeCheckpointError(HexaError):
    """A checkpoint would run code when unpickled; we refuse to load it."""


class IntegrityError(HexaError):
    """A downloaded file differs from the checksum its authors publish, or from the one recorded at first download."""


class OfflineError(HexaError):
    """A network operation was requested while offline."""


class DataError(HexaError):
    """A dataset, image or annotation is missing or malformed."""


class ConfigError(HexaError):
    """A configuration value or override is invalid."""
