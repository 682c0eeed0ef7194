"""User-facing errors: the CLI prints these as one line, without a traceback."""


class ReprogramError(Exception):
    """An error caused by the user's input (file, option, class list), with a readable message."""
