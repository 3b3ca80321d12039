"""What a run leaves on disk: checkpoints, the metrics log, and the checks that protect them.

A training checkpoint is a model checkpoint (:mod:`kp2d_core.model.checkpoint`) plus a ``training``
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

from kp2d_core.config import to_dict
from kp2d_core.output_files import describe_os_error, earlier_results

LOG = logging.getLogger(__name__)
LAST_CHECKPOINT = 'checkpoints/last.pt'
METRICS = 'metrics.jsonl'
TEMP_GLOB = '.*.tmp'  # what an interrupted atomic_save leaves behind
RUN_RESULTS = (METRICS, 'config.json', LAST_CHECKPOINT, 'model.pt')  # what a run leaves


MIN_FREE_BYTES = 64 * 2**20  # below this, the next write (log, TensorBoard, checkpoint) may fail


class RunDirError(OSError):
    """The run directory cannot hold the run (read-only, full, or not writable)."""


def check_free_space(out: Path, step: int) -> None:
    """End the run with the promised message while there is still room, before a write of
    metrics, TensorBoard events or a checkpoint fails half-way (the last checkpoint stays).

    Raises:
        RunDirError: fewer than ``MIN_FREE_BYTES`` are free in ``out``.
    """
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(
            errno.ENOSPC,
            f'{out} has {free / 2**20:.0f} MiB free at step {step}: no space left on the '
            'device; the previous checkpoint is intact, free some space and continue with '
            '--resume',
        )


def die_with_parent(worker_id: int) -> None:
    """DataLoader worker_init_fn: the worker is killed when the trainer dies (even by
    SIGKILL), instead of living on as an orphan (Linux; elsewhere nothing happens)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL('libc.so.6', use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


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


def prepare_run_dir(
    trainer: Any, resume: bool, allow_config_change: bool, overwrite: bool = False
) -> None:
    """Clean, check and fill the run directory before the first step.

    Raises:
        RunDirError: a new run (no ``resume``) in a folder that holds a run, unless
            ``overwrite``: its metrics, configuration and checkpoints would be replaced.
    """
    out, cfg = trainer.out, trainer.cfg
    if not trainer.ctx.main:
        if resume:
            trainer.restore(out / LAST_CHECKPOINT, allow_config_change)
        return
    remove_stale_temp_files(out)
    check_writable(out, len(json.dumps(to_dict(cfg))) + 3 * _parameter_bytes(trainer))
    if resume:
        last = out / LAST_CHECKPOINT
        if not last.is_file():
            raise FileNotFoundError(f'--resume: no checkpoint at {last}')
        trainer.restore(last, allow_config_change)
        truncate_metrics(out / METRICS, trainer.step)
        return
    found = earlier_results(out, RUN_RESULTS)
    if found and not overwrite:
        raise RunDirError(
            errno.EEXIST,
            f'{out} holds a run ({", ".join(str(p.relative_to(out)) for p in found)}): '
            '--resume continues it, --overwrite starts a new run in its place',
        )
    (out / METRICS).unlink(missing_ok=True)
    (out / 'skipped_images.txt').unlink(missing_ok=True)
    (out / 'config.json').write_text(json.dumps(to_dict(cfg), indent=2))
    if cfg.init_weights:
        trainer.initialise_from(Path(cfg.init_weights))


def ctx_is_main() -> bool:
    """Rank 0 (or no distributed run): the process that owns the run directory."""
    return os.environ.get('RANK', '0') == '0'


def _parameter_bytes(trainer: Any) -> int:
    return sum(p.numel() * p.element_size() for p in trainer.module.parameters())
