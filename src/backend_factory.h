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

#endif
