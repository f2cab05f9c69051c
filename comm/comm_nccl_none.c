/* comm_nccl_none.c: the device collectives of comm.h in builds without CUDA and NCCL. No
 * communicator can exist here, so creation reports why and every other call is a bug. */
#include <stddef.h>

#include "comm.h"
#include "common.h"

dt_comm_nccl *dt_comm_nccl_create(dt_comm *comm) {
  (void)comm;
  dt_error_set(DT_ERR_CONFIG, "this build has no NCCL (built without the CUDA backend); rebuild "
               "with the CUDA toolkit, cuDNN and NCCL installed (cmake -DDT_CUDA=ON), or use "
               "--device cpu");
  return NULL;
}

void dt_comm_nccl_destroy(dt_comm_nccl *nc) {
  if (nc) DT_FATAL("dt_comm_nccl_destroy: this build has no NCCL");
}

void dt_comm_nccl_allreduce_async(dt_comm_nccl *nc, float *dev, size_t count,
                                  void *compute_stream) {
  (void)nc;
  (void)dev;
  (void)count;
  (void)compute_stream;
  DT_FATAL("dt_comm_nccl_allreduce_async: this build has no NCCL");
}

void dt_comm_nccl_allreduce_max_i32_async(dt_comm_nccl *nc, int32_t *dev, size_t count,
                                          void *compute_stream) {
  (void)nc;
  (void)dev;
  (void)count;
  (void)compute_stream;
  DT_FATAL("dt_comm_nccl_allreduce_max_i32_async: this build has no NCCL");
}

void dt_comm_nccl_wait(dt_comm_nccl *nc, void *compute_stream, const char *what) {
  (void)nc;
  (void)compute_stream;
  (void)what;
  DT_FATAL("dt_comm_nccl_wait: this build has no NCCL");
}

void dt_comm_nccl_join(dt_comm_nccl *nc, void *compute_stream) {
  (void)nc;
  (void)compute_stream;
  DT_FATAL("dt_comm_nccl_join: this build has no NCCL");
}

void dt_comm_nccl_set_timeout(dt_comm_nccl *nc, double seconds) {
  (void)nc;
  (void)seconds;
  DT_FATAL("dt_comm_nccl_set_timeout: this build has no NCCL");
}

double dt_comm_nccl_host_seconds(const dt_comm_nccl *nc) {
  (void)nc;
  DT_FATAL("dt_comm_nccl_host_seconds: this build has no NCCL");
}

size_t dt_comm_nccl_allreduce_count(const dt_comm_nccl *nc) {
  (void)nc;
  DT_FATAL("dt_comm_nccl_allreduce_count: this build has no NCCL");
}

size_t dt_comm_nccl_allreduce_bytes(const dt_comm_nccl *nc) {
  (void)nc;
  DT_FATAL("dt_comm_nccl_allreduce_bytes: this build has no NCCL");
}
