"""User-facing errors: one clear sentence, turned by the CLI into a one-line message and exit code 2."""


class UserError(Exception):
    """A problem the user can fix (bad file, bad config, missing package); the message names it."""


def require(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)
