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

bool dt_backend_compute_line(dt_device device, dt_precision precision, char *buf, size_t size) {
  if (size) buf[0] = 0;
  if (device != DT_DEVICE_CPU) return precision != DT_PRECISION_FP32;
  return dt_cpu_compute_line(precision, buf, size);
}

/* Every member of dt_backend_ops is in exactly one of the two lists of backend.h: the lists
 * count as many pointers as the struct holds, and their offsets add up to those of all of its
 * members (a member listed twice would leave another one out). */
#define DT_COUNT_MEMBER(m) +1
#define DT_OFFSET_MEMBER(m) +offsetof(dt_backend_ops, m)
enum {
  DT_BACKEND_MEMBERS = 0 DT_BACKEND_REQUIRED_OPS(DT_COUNT_MEMBER)
      DT_BACKEND_OPTIONAL_OPS(DT_COUNT_MEMBER)
};
_Static_assert(sizeof(dt_backend_ops) == DT_BACKEND_MEMBERS * sizeof(void *),
               "a member of dt_backend_ops is in neither DT_BACKEND_REQUIRED_OPS nor "
               "DT_BACKEND_OPTIONAL_OPS (backend.h)");
_Static_assert((0 DT_BACKEND_REQUIRED_OPS(DT_OFFSET_MEMBER) DT_BACKEND_OPTIONAL_OPS(
                   DT_OFFSET_MEMBER)) == sizeof(void *) * DT_BACKEND_MEMBERS *
                                             (DT_BACKEND_MEMBERS - 1) / 2,
               "a member of dt_backend_ops is listed twice in backend.h");

const char *dt_backend_ops_missing(const dt_backend_ops *ops) {
#define DT_CHECK_MEMBER(m) \
  if (!ops->m) return #m;
  DT_BACKEND_REQUIRED_OPS(DT_CHECK_MEMBER)
#undef DT_CHECK_MEMBER
  return NULL;
}
