#!/usr/bin/env python3
"""Run a command as if this CPU had AVX2 and nothing wider: the speed targets' kind of CPU.

    python -m benchmarks.avx2_only python -m benchmarks.node --variant light
    python -m benchmarks.avx2_only python -m benchmarks.inference
    python -m benchmarks.avx2_only --check

The speed targets are meant for AVX2-only CPUs (Zen 2/3 and older Intel, common on robots),
where ONNX Runtime's int8 kernels have no VNNI and PyTorch no bf16. On a CPU with AVX-512,
VNNI, BF16 or AMX this builds ``avx2_only.c`` with the C compiler (``CC``, default ``cc``) and
preloads it into the command and every process it starts: CPUID then hides those extensions,
and every library picks the AVX2 kernels an AVX2-only CPU would run. What it does not change
is this CPU's clock, caches and execution units, so its figures approximate an AVX2-only CPU
of this generation and clock, not an older one: report them as such, beside this CPU's own.
Linux on x86-64 with CPUID faulting only (the ``cpuid_fault`` flag in /proc/cpuinfo: many
Intel CPUs, and the Zen 4 this was written on); ``--check`` says whether it works here. On a
CPU with nothing to hide the command runs as it is. A program that installs its own SIGSEGV
handler (Python's ``faulthandler``, hence pytest) cannot run under it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
import platform
import shutil
import subprocess
import sys
import tempfile

from kp2d_core.evaluation.cpu import SIMD_FLAGS, cpu_flags
from kp2d_core.inference.backends import cache_dir

SOURCE = Path(__file__).with_name('avx2_only.c')
WIDER_THAN_AVX2 = tuple(flag for flag in SIMD_FLAGS if flag != 'avx2')
# Asked in a child process under the preload: does the libraries' dispatch still see AVX-512F?
PROBE = (
    'from kp2d_core.evaluation.cpu import dispatch_sees_avx512; print(int(dispatch_sees_avx512()))'
)


class CannotHideError(RuntimeError):
    """AVX-512 cannot be hidden here."""


def wider_than_avx2(flags: set[str]) -> list[str]:
    """The extensions beyond AVX2 this CPU exposes (what the preload hides)."""
    return [flag for flag in WIDER_THAN_AVX2 if flag in flags]


def build_preload(cache: Path) -> Path:
    """The shared library built from ``avx2_only.c`` (cached under ``cache`` by the source's
    hash; built into a temporary name and renamed, so concurrent runs never see half a file).
    """
    system, machine = platform.system(), platform.machine()
    if system != 'Linux' or machine not in ('x86_64', 'AMD64'):
        raise CannotHideError(f'needs Linux on x86-64, not {system} {machine}')
    if 'cpuid_fault' not in cpu_flags():
        raise CannotHideError('this CPU or kernel has no CPUID faulting (cpuid_fault flag)')
    compiler = os.environ.get('CC', 'cc')
    if shutil.which(compiler) is None:
        raise CannotHideError(f'no C compiler ({compiler}; set CC)')
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    target = cache / f'avx2_only-{digest}.so'
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, '-O2', '-shared', '-fPIC', '-o', str(built), str(SOURCE)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise CannotHideError(f'{" ".join(command)} failed:\n{done.stderr.strip()}')
        os.replace(built, target)
    return target


def preloaded(env: dict[str, str], library: Path) -> dict[str, str]:
    """``env`` with ``library`` first in LD_PRELOAD."""
    current = env.get('LD_PRELOAD', '')
    return {**env, 'LD_PRELOAD': f'{library} {current}'.strip()}


def sees_avx512(env: dict[str, str]) -> bool:
    """Whether a Python process started with ``env`` still sees AVX-512F."""
    done = subprocess.run(
        [sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == '1'


def avx2_environment(cache: Path) -> dict[str, str]:
    """This process's environment with AVX-512 and the rest hidden, checked on a child."""
    env = preloaded(dict(os.environ), build_preload(cache))
    if sees_avx512(env):
        raise CannotHideError('the preload is built but AVX-512F is still visible')
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true', help='say whether it works here')
    parser.add_argument('--cache', type=Path, default=cache_dir(), help='where it builds')
    parser.add_argument('command', nargs=argparse.REMAINDER, help='the command to run')
    args = parser.parse_args(argv)
    if not args.check and not args.command:
        parser.error('give a command to run, or --check')
    hidden = wider_than_avx2(cpu_flags())
    if not hidden:
        print('avx2_only: this CPU has nothing beyond AVX2 to hide', file=sys.stderr)
        env = dict(os.environ)
    else:
        try:
            env = avx2_environment(args.cache)
        except CannotHideError as error:
            print(f'avx2_only: cannot hide AVX-512 here: {error}', file=sys.stderr)
            return 2
        print(f'avx2_only: hidden from the command: {" ".join(hidden)}', file=sys.stderr)
    if args.check:
        return 0
    return subprocess.run(args.command, env=env).returncode


if __name__ == '__main__':
    sys.exit(main())
