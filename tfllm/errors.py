"""The one exception type a user sees for bad input."""


class UserInputError(ValueError):
    """Bad input a user can fix: the message names the input and the fix.

    The CLI prints the message on one line and exits with status 2; library
    callers catch it like any `ValueError`.
    """
