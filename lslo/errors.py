"""User-facing errors.

`LsloError` carries a one-line message that names the file or flag at fault and the fix. The CLI prints
it as `lslo: error: <message>` and exits with code 2, without a traceback. Library code raises it for
bad input; programming errors stay ordinary exceptions.
"""


class LsloError(ValueError):
    """Bad input from the user: a one-line message naming the file/flag and the fix."""
