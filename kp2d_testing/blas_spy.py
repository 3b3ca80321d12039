"""What NumPy's BLAS was told when a program loaded it: the program runs in a fresh
interpreter behind an import hook that reads the BLAS thread setting the moment NumPy is
imported (BLAS reads it then, and only then)."""

from __future__ import annotations

import os
import subprocess
import sys

SPY = """
import importlib.abc, os, sys
seen = []


class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'numpy' and not seen:
            seen.append(os.environ.get('OPENBLAS_NUM_THREADS', 'unset'))


sys.meta_path.insert(0, Spy())
try:
{program}
except SystemExit:
    pass
print(seen[0] if seen else 'not loaded')
"""


def blas_threads_seen(program: str, given: str | None) -> str:
    """OPENBLAS_NUM_THREADS as NumPy saw it when ``program`` (Python statements, run until
    they end or exit) first imported it: 'unset' when none was set, 'not loaded' when NumPy
    never loaded. ``given``: the value in the environment the program starts with (None:
    not set)."""
    env = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_NUM_THREADS'}
    if given is not None:
        env['OPENBLAS_NUM_THREADS'] = given
    body = '\n'.join('    ' + line for line in program.strip().splitlines())
    out = subprocess.run(
        [sys.executable, '-c', SPY.format(program=body)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return out.stdout.strip().splitlines()[-1]
