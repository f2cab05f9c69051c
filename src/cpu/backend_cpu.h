/* backend_cpu.h: the constructor of the oneDNN CPU backend (src/cpu/), called by
 * dt_backend_create (src/backend_factory.c) for DT_DEVICE_CPU, and by tests that need a CPU
 * backend directly. Model and training code reach the backend through src/backend.h only. */
#ifndef DT_BACKEND_CPU_H
#define DT_BACKEND_CPU_H

#include "backend.h"

/* The CPU backend with `threads` OpenMP threads (<= 0 keeps the OpenMP default). */
dt_backend *dt_backend_cpu_create(int threads);

/* One line on how this CPU computes in `precision`: the ISA oneDNN dispatches to and, for
 * bf16 / fp16, whether the CPU backend runs it natively (16-bit activations on oneDNN's
 * kernels) or emulates it ("bf16: emulated, this CPU has no bf16 instructions"). Returns
 * true for a 16-bit precision run natively. */
bool dt_cpu_compute_line(dt_precision precision, char *buf, size_t size);
/* set_precision, but emulated even where the CPU has 16-bit instructions (fp32 activations,
 * convolutions rounding their operands): for the tests of the emulation (test_precision). */
dt_status dt_cpu_set_precision_emulated(dt_backend *be, dt_precision precision);
/* The element size in bytes of the activations a CPU backend's ops create (4, or 2 in native
 * 16-bit mode); for tests. */
int dt_cpu_act_bytes(dt_backend *be);
/* The element size in bytes of a CPU backend layout (4 for fp32, 2 for bf16 / fp16). */
int dt_cpu_layout_elem_bytes(const dt_layout *l);
/* How many live primitives of a CPU backend run oneDNN's reference code (reorders aside). */
int dt_cpu_ref_prims(dt_backend *be);

#endif
