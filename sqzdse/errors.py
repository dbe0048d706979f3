"""The base of every error sqzdse raises for its user's input or environment (not for its own bugs).

Each project error also keeps its ValueError / RuntimeError base, so ``except ValueError`` in library callers
still works; the CLI catches ``SqzdseError`` (one line, exit code 2) and lets anything else show its traceback.
"""


class SqzdseError(Exception):
    """An error the user can act on: a bad flag, file, spec, storage or dataset; the message says which."""

    exit_code = 2  # what the CLI exits with after printing the one line


class InputError(SqzdseError, ValueError):
    """A value given to sqzdse that it cannot use (a flag, an argument, a file's content)."""


class MissingDependency(SqzdseError, RuntimeError):
    """An optional package a command needs is not installed; the message names the pip extra."""
