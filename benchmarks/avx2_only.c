/*
 * Preloaded into a process (LD_PRELOAD) by benchmarks/avx2_only.py: hides AVX-512, VNNI,
 * BF16, FP16 and AMX from CPUID so that every library (ONNX Runtime's MLAS, oneDNN in
 * PyTorch, OpenCV, NumPy) picks its AVX2 kernels, as on an AVX2-only CPU (Zen 2/3, older
 * Intel). Linux on x86-64 with CPUID faulting (the `cpuid_fault` CPU flag): CPUID then traps,
 * the handler below runs it for real and clears the bits. Only what the code dispatches on
 * changes; clock, caches and execution units stay this CPU's.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

/* CPUID leaf 7, sub-leaf 0: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL (EBX); AVX512_VBMI, VBMI2,
 * VNNI, BITALG, VPOPCNTDQ (ECX); AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX_BF16, AVX512_FP16,
 * AMX_TILE, AMX_INT8 (EDX). Sub-leaf 1: AVX_VNNI, AVX512_BF16 (EAX). */
static const uint32_t HIDE_7_0_EBX = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) |
                                     BIT(28) | BIT(30) | BIT(31);
static const uint32_t HIDE_7_0_ECX = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
static const uint32_t HIDE_7_0_EDX = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) |
                                     BIT(25);
static const uint32_t HIDE_7_1_EAX = BIT(4) | BIT(5);

static long cpuid_faulting(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, !on); }

static void on_fault(int signo, siginfo_t *info, void *context) {
    (void)signo;
    (void)info;
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* not CPUID: a real fault, crash as usual */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)reg[REG_RAX], sub = (uint32_t)reg[REG_RCX];
    uint32_t a, b, c, d;
    cpuid_faulting(0);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~HIDE_7_0_EBX;
        c &= ~HIDE_7_0_ECX;
        d &= ~HIDE_7_0_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~HIDE_7_1_EAX;
    }
    reg[REG_RAX] = a;
    reg[REG_RBX] = b;
    reg[REG_RCX] = c;
    reg[REG_RDX] = d;
    reg[REG_RIP] += 2; /* past the CPUID instruction */
}

/* Runs before main(); threads started later inherit the faulting, exec() ends it. */
__attribute__((constructor)) static void hide_avx512(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSEGV, &action, NULL) == 0 && cpuid_faulting(1) != 0)
        signal(SIGSEGV, SIG_DFL); /* no CPUID faulting here: leave the process as it was */
}
