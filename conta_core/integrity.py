"""What happens to a finished artifact found damaged: it is deleted, and the error says so.

A damaged output (truncated, bytes flipped, garbage inside) must never be used,
and must not block the workflow either: Snakemake considers an existing file
finished, so every rerun would read the same broken file again. The reader that
finds the damage (:mod:`conta_core.store` for HDF5 artifacts,
:mod:`conta_core.checkpoint` for model files) therefore deletes it and raises
:class:`DamagedArtifact`; the job fails with a message naming the file, and the
next run of the same command sees the file missing and rebuilds it (and, as
Snakemake does for any rebuilt input, what depends on it).

Only damage proven by the file itself deletes it (a checksum mismatch, a file
too short for its own header, data that does not decompress). A file that
cannot be opened for other reasons (permissions, a lock, a missing disk) or that
is intact but foreign is reported and left alone. This module imports neither
torch nor h5py.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RERUN_HINT = "rerun the same command and Snakemake rebuilds it (and what depends on it)"


class DamagedArtifact(RuntimeError):
    """A finished artifact whose content is damaged; ``removed`` says whether it was deleted."""

    def __init__(self, path: str | os.PathLike, reason: str, removed: bool, detail: str = ""):
        self.path, self.reason, self.removed, self.detail = Path(path), reason, removed, detail
        super().__init__(f"{path} is damaged ({reason}); {detail}")

    def __reduce__(self):  # survives pickling (worker processes, DDP ranks) with its fields
        return (type(self), (str(self.path), self.reason, self.removed, self.detail))


def discard(path: str | os.PathLike, reason: str, *, remove: bool = True,
            error: type[DamagedArtifact] = DamagedArtifact) -> DamagedArtifact:
    """Delete the damaged file at ``path`` (if ``remove``) and return the ``error`` to raise.

    The error's message names the file, what is wrong with it and what happened
    to it, so a failed job's log tells the user everything they need.
    """
    path = Path(path)
    if not remove:
        return error(path, reason, False, "it was left in place: delete it, then rerun to rebuild it")
    try:
        path.unlink()
    except FileNotFoundError:
        pass  # another reader of the same file got there first
    except OSError as err:
        log.error("%s is damaged (%s) but could not be deleted: %s", path, reason, err)
        return error(path, reason, False, f"it could not be deleted ({err}): delete it by hand, then {RERUN_HINT}")
    detail = f"it was deleted: {RERUN_HINT}"
    log.error("%s is damaged (%s); deleted it for a rebuild", path, reason)
    return error(path, reason, True, detail)
