"""User-facing errors: raised for bad input or configuration, printed as one clear line (no traceback)."""


class IdcError(Exception):
    """Bad input, configuration or artifact; the message names the file or key and the fix."""


class DataError(IdcError):
    """The data root or a data file is missing, empty or malformed."""


class CheckpointError(IdcError):
    """A checkpoint does not match the configured model or data."""


class ConfigError(IdcError):
    """A config value is out of range or inconsistent."""


class IntegrityError(IdcError):
    """A run-dir file is damaged, was changed after its stage wrote it, was made from other inputs, or
    would hold NaN or infinite values."""


class DiskFullError(IdcError):
    """The disk filled up while a file was written; nothing half-written is left."""
