"""Errors a user can fix (a missing dataset or checkpoint, a bad card): the ``zoo`` command prints their message on
one line and exits 2; ``ZOO_DEBUG=1`` shows the traceback instead."""

from __future__ import annotations

import errno


class UserError(Exception):
    """Base of the zoo's errors that say what was wrong and what to do; raised alongside a standard type
    (``class CheckpointError(UserError, ValueError)``) so ``except ValueError`` keeps working."""


# Writing failed because of the place, not the program: no space, no permission, a read-only disk, a file in the way.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def user_error(err: BaseException) -> str | None:
    """The message of the first ``UserError`` in ``err``'s chain (Lightning may wrap it), or of an OSError that
    says the output could not be written; else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserError):
            return str(err)
        if isinstance(err, OSError) and err.errno in UNWRITABLE:
            return (f"could not write {err.filename or 'the output'}: {err.strerror}. Free some space or choose "
                    "another folder (--trainer.default_root_dir, --out); files already written are intact.")
        err = err.__cause__ or err.__context__
    return None
