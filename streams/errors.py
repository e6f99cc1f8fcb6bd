"""Errors a user can fix: the CLI shows their message alone, without a traceback."""


class UserError(Exception):
    """A problem the user can fix; its message says what to do."""
