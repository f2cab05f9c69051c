/* backend_cpu.h: the constructor of the oneDNN CPU backend (src/cpu/), called by
 * dt_backend_create (src/backend_factory.c) for DT_DEVICE_CPU, and by tests that need a CPU
 * backend directly. Model and training code reach the backend through src/backend.h only. */
#ifndef DT_BACKEND_CPU_H
#define DT_BACKEND_CPU_H

#include "backend.h"

/* The CPU backend with `threads` OpenMP threads (<= 0 keeps the OpenMP default). */
dt_backend *dt_backend_cpu_create(int threads);

#endif
