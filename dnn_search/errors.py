"""The one exception type that means "the user gave us something we cannot use"."""


class UserError(Exception):
    """A problem the user can fix. The CLI prints its message on one line and exits 2."""
