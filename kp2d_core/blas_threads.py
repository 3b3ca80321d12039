"""NumPy's BLAS on one thread, for a process that runs the per-frame pipeline.

NumPy's BLAS starts a thread per core that keeps spinning after each product (descriptor
matching, homography fits), taking the cores from ONNX Runtime's and OpenCV's threads.
Resized to 240x320 the node gave 54 % of ``extract()``'s frame rate with it and 76 % with one
thread (docs/memory.md); in the sequence benchmark the bundled hybrid took 4-5 % and KLT 16-20 %
less time per frame with one thread. This module imports nothing heavy, so an entry point can
call :func:`one_blas_thread` before NumPy loads.
"""

from __future__ import annotations

import os

BLAS_THREADS = {'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def one_blas_thread() -> None:
    """Ask for one BLAS thread (a value the user set wins). BLAS reads the variables when
    NumPy first loads it: call this before anything imports NumPy."""
    for name, value in BLAS_THREADS.items():
        os.environ.setdefault(name, value)
