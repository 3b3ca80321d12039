"""Result files that are never lost: output folders checked before any work, atomic writes.

A tool that writes results (the sequence benchmark, the replay tool, training) first makes
sure its folder can take them (a folder, writable, with room) and does not hold the results
of an earlier run, unless the user asked to replace them; then it writes every file through
a temporary file renamed over the target, so a crash or a full disk leaves either the old
file or the new one, never a truncated one.
"""

from __future__ import annotations

from collections.abc import Iterable
import errno
import os
from pathlib import Path
import shutil
import tempfile

MIN_FREE_BYTES = 16 * 2**20  # a folder with less room than this is refused before the work


class OutputFolderError(OSError):
    """An output folder that cannot take the results, or that holds earlier ones."""


def describe_os_error(exc: OSError) -> str:
    """A one-line reason for the errors that stop a writer: no space, read-only, permissions."""
    reasons = {
        errno.ENOSPC: 'no space left on the device',
        errno.EDQUOT: 'disk quota exceeded',
        errno.EROFS: 'the file system is read-only',
        errno.EACCES: 'permission denied',
        errno.ENOTDIR: 'a path component is a file, not a folder',
    }
    return reasons.get(exc.errno, exc.strerror or str(exc))


def earlier_results(folder: Path, patterns: Iterable[str]) -> list[Path]:
    """The files (or folders) in ``folder`` that match ``patterns`` (glob), sorted."""
    if not folder.is_dir():
        return []
    return sorted({path for pattern in patterns for path in folder.glob(pattern)})


def prepare_output_folder(
    folder: Path,
    patterns: Iterable[str],
    overwrite: bool = False,
    min_free_bytes: int = MIN_FREE_BYTES,
) -> list[Path]:
    """Make ``folder`` ready for a run's results, before the run computes anything.

    Args:
        folder: where the results go (created with its parents).
        patterns: globs of the files a run writes there (its results).
        overwrite: allow earlier results; they are returned for the caller to replace.
        min_free_bytes: room the folder must have.

    Returns:
        The earlier results found (empty unless ``overwrite``).

    Raises:
        OutputFolderError: the path is a file, cannot be created or written, has too little
            room, or holds earlier results and ``overwrite`` is False (all named).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(errno.ENOTDIR, f'{folder} is a file, not a folder')
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.write_probe.'):
            pass
    except OSError as exc:
        raise OutputFolderError(
            exc.errno, f'cannot write to {folder}: {describe_os_error(exc)}'
        ) from None
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise OutputFolderError(
            errno.ENOSPC,
            f'{folder} has {free / 2**20:.1f} MiB free; the results need at least '
            f'{min_free_bytes / 2**20:.0f} MiB',
        )
    found = earlier_results(folder, patterns)
    if found and not overwrite:
        names = ', '.join(p.name for p in found[:5]) + (' ...' if len(found) > 5 else '')
        raise OutputFolderError(
            errno.EEXIST,
            f'{folder} holds results of an earlier run ({names}); choose another folder or '
            'pass --overwrite to replace them',
        )
    return found


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, rename it over
    ``path``. On any error the temporary file is removed and ``path`` is as it was.

    Raises:
        OSError: with the reason (a full disk: ENOSPC).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode('utf-8'))
