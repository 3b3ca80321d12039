"""What a run leaves on disk: checkpoints, the metrics log, and the checks that protect them.

A training checkpoint is a model checkpoint (:mod:`kp2d_core.checkpoint`) plus a ``training``
dict (config, IONet, optimiser, step, epoch, position in the epoch, RNG state). Writes are
atomic, so a kill or a full disk never destroys the previous checkpoint.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
import shutil
from typing import Any

LOG = logging.getLogger(__name__)
LAST_CHECKPOINT = 'checkpoints/last.pt'
METRICS = 'metrics.jsonl'
TEMP_GLOB = '.*.tmp'  # what an interrupted atomic_save leaves behind


class RunDirError(OSError):
    """The run directory cannot hold the run (read-only, full, or not writable)."""


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Delete temporary checkpoint files left by a killed write; returns what was removed."""
    removed = sorted((out / 'checkpoints').glob(TEMP_GLOB)) if out.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
        LOG.warning('removed %s, left by an interrupted checkpoint write', path)
    return removed


def check_writable(out: Path, needed_bytes: int) -> None:
    """Fail before training when ``out`` cannot take a checkpoint of ``needed_bytes``.

    Raises:
        RunDirError: naming the directory and the reason (read-only, no space, permissions).
    """
    folder = out / 'checkpoints'
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / '.write_probe.tmp'
        probe.write_bytes(b'0')
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            exc.errno, f'cannot write to {folder}: {describe_os_error(exc)}'
        ) from exc
    free = shutil.disk_usage(folder).free
    if free < 2 * needed_bytes:  # the new checkpoint is written beside the old one
        raise RunDirError(
            errno.ENOSPC,
            f'{folder} has {free / 2**20:.0f} MiB free; a checkpoint needs '
            f'{needed_bytes / 2**20:.0f} MiB and is written beside the previous one',
        )


def describe_os_error(exc: OSError) -> str:
    """A one-line reason for the errors that end a run: no space, read-only, permissions."""
    reasons = {
        errno.ENOSPC: 'no space left on the device',
        errno.EDQUOT: 'disk quota exceeded',
        errno.EROFS: 'the file system is read-only',
        errno.EACCES: 'permission denied',
    }
    return reasons.get(exc.errno, str(exc))


def is_storage_error(exc: BaseException) -> bool:
    """True for a full or read-only disk, also when torch wraps it in a RuntimeError."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    text = str(exc)
    return 'No space left' in text or 'unexpected pos' in text or 'Read-only file' in text


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    with open(out / METRICS, 'a') as handle:
        handle.write(json.dumps(record) + '\n')


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics log; a torn line (a kill during a write) is dropped with a warning."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            LOG.warning('%s line %d is incomplete (interrupted write): dropped', path, number)
            continue
        if isinstance(record, dict) and isinstance(record.get('step'), int):
            records.append(record)
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (later ones are recomputed after a resume)."""
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if r['step'] <= step]
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in keep))
    os.replace(tmp, path)
