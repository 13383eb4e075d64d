"""User-facing errors: the CLI prints the message on one line and exits with code 2."""


class LTCError(ValueError):
    """A problem with the user's input or environment, explained in one line."""
