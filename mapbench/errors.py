"""User-facing errors: printed as one line by the CLI (a traceback only with --debug)."""


class UserError(ValueError):
    """Bad input from the user: a value, a file or a name. The message names it."""
