"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
  """A bad flag, override, workdir or configuration; the message says how to fix it."""
