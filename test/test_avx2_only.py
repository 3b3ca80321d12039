"""benchmarks/avx2_only.py: AVX-512 and the rest hidden from a command, real faults still fatal."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from benchmarks import avx2_only

FLAGS = avx2_only.cpu_flags()
CAN_HIDE = bool(avx2_only.wider_than_avx2(FLAGS)) and 'cpuid_fault' in FLAGS
needs_hiding = pytest.mark.skipif(
    not CAN_HIDE, reason='needs a CPU beyond AVX2 with CPUID faulting (cpuid_fault flag)'
)


def test_wider_than_avx2_lists_only_what_is_beyond():
    assert avx2_only.wider_than_avx2({'sse2', 'avx', 'avx2', 'fma'}) == []
    zen4 = {'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'cpuid_fault'}
    assert avx2_only.wider_than_avx2(zen4) == ['avx512f', 'avx512_vnni', 'avx512_bf16']
    assert avx2_only.wider_than_avx2({'avx2', 'avx_vnni'}) == ['avx_vnni']


def test_a_missing_compiler_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv('CC', str(tmp_path / 'no-such-cc'))
    with pytest.raises(avx2_only.CannotHideError):
        avx2_only.build_preload(tmp_path)
    assert not list(tmp_path.glob('*.so'))


@needs_hiding
def test_children_see_avx2_but_no_avx512(tmp_path):
    env = avx2_only.avx2_environment(tmp_path)
    assert avx2_only.sees_avx512({k: v for k, v in env.items() if k != 'LD_PRELOAD'})
    assert not avx2_only.sees_avx512(env)
    probe = (
        'import torch, cv2; from kp2d_core.evaluation.cpu import cpu_description; '
        'print(torch.backends.cpu.get_cpu_capability(), cv2.checkHardwareSupport(11)); '
        'print(cpu_description())'
    )
    out = subprocess.run(
        [sys.executable, '-c', probe], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == 'AVX2 True'  # cv::CPU_AVX2 is 11: AVX2 itself stays visible
    assert 'hidden from CPUID' in out[1] and 'avx512f' in out[1]


@needs_hiding
def test_the_command_runs_with_its_exit_status_and_real_faults_stay_fatal(tmp_path):
    argv = ['--cache', str(tmp_path), sys.executable, '-c', 'import sys; sys.exit(3)']
    assert avx2_only.main(argv) == 3
    env = avx2_only.avx2_environment(tmp_path)
    crash = subprocess.run(
        [sys.executable, '-c', 'import ctypes; ctypes.string_at(0)'], env=env, timeout=60
    )
    assert crash.returncode == -signal.SIGSEGV
    assert len(list(tmp_path.glob('avx2_only-*.so'))) == 1  # built once, then reused
