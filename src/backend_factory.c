/* backend_factory.c: the one place that picks a compute backend for a device
 * (docs/architecture.md "Backend table"): the only file that calls both constructors. */
#include "backend_factory.h"

#include <stddef.h>

#include "cpu/backend_cpu.h"
#ifdef DT_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

dt_backend *dt_backend_create(dt_device device, int threads, int local_rank, int local_size) {
  switch (device) {
  case DT_DEVICE_CPU:
    return dt_backend_cpu_create(threads);
  case DT_DEVICE_CUDA:
#ifdef DT_HAVE_CUDA
    return dt_backend_cuda_create(threads, local_rank, local_size);
#else
    (void)local_rank;
    (void)local_size;
    dt_error_set(DT_ERR_CONFIG,
                 "this build has no CUDA backend (--device cuda); rebuild with the CUDA toolkit, "
                 "cuDNN and NCCL installed (cmake -DDT_CUDA=ON), or use --device cpu");
    return NULL;
#endif
  }
  dt_error_set(DT_ERR_CONFIG, "unknown device %d", (int)device);
  return NULL;
}
