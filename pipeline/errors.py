"""The one exception type for user-facing errors: its message names the file, key or value."""


class SeqlabError(Exception):
    """Bad input or a failed run, reported to the user as one clear line and a non-zero exit."""


class DivergenceError(SeqlabError):
    """Training produced a NaN or infinite loss."""
