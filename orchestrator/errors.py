"""Errors the command line turns into a one-line message and an exit code."""


class GuardError(Exception):
    """A user-facing error: bad input, unreachable database, refused operation.

    The CLI prints ``error: <message>`` and exits with ``exit_code``; no
    traceback, because the message is meant to be acted on by a person.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
