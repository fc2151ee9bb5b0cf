"""Errors a user can fix (a missing dataset or checkpoint, a bad card): the ``zoo`` command prints their message on
one line and exits 2; ``ZOO_DEBUG=1`` shows the traceback instead."""

from __future__ import annotations


class UserError(Exception):
    """Base of the zoo's errors that say what was wrong and what to do; raised alongside a standard type
    (``class CheckpointError(UserError, ValueError)``) so ``except ValueError`` keeps working."""


def user_error(err: BaseException) -> str | None:
    """The message of the first ``UserError`` in ``err``'s chain (Lightning may wrap it), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserError):
            return str(err)
        err = err.__cause__ or err.__context__
    return None
