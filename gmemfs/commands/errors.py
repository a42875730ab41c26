"""What a command reports to its user."""


class CommandError(Exception):
    """Printed as one line; exit status 1."""
