"""The library's own exception and warning types."""

__all__ = ["LensDataError", "LensDataWarning"]


class LensDataError(ValueError):
    """Bad input data: a file or folder that cannot be used as a lens cutout.

    The message always names the file (or folder) and the problem.

    Attributes
    ----------
    problems : list of (str, str)
        ``(path, reason)`` for every bad input found, the first one being the
        one named in the message. May hold more than one entry when the loader
        scanned a whole directory before raising.
    """

    def __init__(self, message, problems=None):
        super().__init__(message)
        self.problems = list(problems or [])


class LensDataWarning(UserWarning):
    """Input data was skipped or repaired; the message says which and why."""
