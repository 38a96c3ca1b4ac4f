"""The one exception type users see.

Every failure caused by the user's input (a bad file, a PSF that cannot be used, a path that
cannot be written) is raised as :class:`DeconvError` with a message that fits on one line and
says what to do. The CLI prints such errors without a traceback and exits non-zero; anything
else is a bug and is reported as one.
"""


class DeconvError(Exception):
    """A problem with the user's input or environment, explained in one line."""
