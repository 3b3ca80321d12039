"""The CPU a figure was measured on: model, cores and SIMD extensions, as /proc/cpuinfo lists
them and as the libraries' kernel dispatch sees them (every speed figure depends on them:
int8 and bf16 speed need VNNI / AVX512-BF16)."""

from __future__ import annotations

import os
from pathlib import Path
import platform

CV_CPU_AVX_512F = 13  # cv::CPU_AVX_512F (OpenCV core/cvdef.h); cv2 does not name it
SIMD_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16')


def cpuinfo() -> dict[str, str]:
    """The fields of the first CPU in /proc/cpuinfo, up to its ``flags`` (empty where there
    is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            key, _, value = line.partition(':')
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == 'flags':
                break
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    return set(cpuinfo().get('flags', '').split())


def dispatch_sees_avx512() -> bool:
    """Whether CPUID shows this process AVX-512F, as the libraries' kernel dispatch reads it
    (``benchmarks/avx2_only.py`` hides it; /proc/cpuinfo still lists it)."""
    import cv2

    return bool(cv2.checkHardwareSupport(CV_CPU_AVX_512F))


def cpu_description() -> str:
    """The CPU model, its core count and the SIMD extensions it exposes."""
    fields = cpuinfo()
    flags = set(fields.get('flags', '').split())
    model = fields.get('model name', platform.processor() or platform.machine())
    if 'cpu family' in fields and 'model' in fields:  # names like 'AMD EPYC' omit the generation
        model += f' (family {fields["cpu family"]} model {fields["model"]})'
    simd = [f for f in SIMD_FLAGS if f in flags]
    wide = [f for f in simd if f != 'avx2']
    if 'avx512f' in flags and not dispatch_sees_avx512():
        simd = [f for f in simd if f not in wide] + [f'({" ".join(wide)} hidden from CPUID)']
    return f'{model}, {os.cpu_count()} cores, {" ".join(simd) or "no AVX2"}'
