/* backend_factory.h: the one place that picks a compute backend for a device
 * (docs/architecture.md "Backend table"). It sits above the seam and both backends: it calls
 * their constructors, while src/backend.h (the seam) and the backends know nothing of it. */
#ifndef DT_BACKEND_FACTORY_H
#define DT_BACKEND_FACTORY_H

#include "backend.h"

/* Create a backend. threads <= 0 keeps the OpenMP default. local_rank / local_size: this
 * process's rank among the ranks of its node and their count (dt_comm_local_rank), which
 * picks the GPU of a CUDA backend; local_rank < 0 for a process on its own. Returns NULL with
 * an error set (dt_error_set) when the device is not available in this build or on this
 * machine. */
dt_backend *dt_backend_create(dt_device device, int threads, int local_rank, int local_size);

/* One line on how `device` computes in `precision`, for --dry-run, --bench and the start of a
 * run: on the CPU the ISA oneDNN dispatches to and, in bf16 / fp16, whether activations are
 * 16-bit on oneDNN's kernels ("bf16 native") or the precision is emulated ("bf16: emulated,
 * this CPU has no bf16 instructions"); "" for a device that says nothing. Returns true when
 * a 16-bit precision runs natively. */
bool dt_backend_compute_line(dt_device device, dt_precision precision, char *buf, size_t size);

#endif
