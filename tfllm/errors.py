"""The one exception type a user sees for bad input, and the check for an optional extra."""

import importlib.util


class UserInputError(ValueError):
    """Bad input a user can fix: the message names the input and the fix.

    The CLI prints the message on one line and exits with status 2; library
    callers catch it like any `ValueError`.
    """


def require_extra(what, extra, *modules):
    """Raises one line naming the pip extra to install when one of `modules` is missing.

    Checked before the work starts (a TFLite export would otherwise convert the
    model first and then fail on the interpreter's import), without importing.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserInputError(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                             f"installed: pip install \"tfllm[{extra}]\" (or -e \".[{extra}]\" in a checkout).")
