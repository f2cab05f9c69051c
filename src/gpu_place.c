/* gpu_place.c: the GPU placement policy, one GPU per node-local rank (see gpu_place.h). */
#include "gpu_place.h"

#include <stdio.h>

/* "CUDA_VISIBLE_DEVICES=0,1" or "CUDA_VISIBLE_DEVICES unset", for messages. */
static const char *visible_note(const char *cuda_visible_devices, char *buf, size_t size) {
  if (!cuda_visible_devices) return "CUDA_VISIBLE_DEVICES unset";
  snprintf(buf, size, "CUDA_VISIBLE_DEVICES=%s", cuda_visible_devices);
  return buf;
}

dt_status dt_gpu_place(int local_rank, int local_size, int visible_gpus,
                       const char *cuda_visible_devices, int *device) {
  char buf[256];
  const char *note = visible_note(cuda_visible_devices, buf, sizeof buf);
  if (visible_gpus < 1)
    return dt_error_set(DT_ERR_CONFIG, "no GPU visible (%s); use --device cpu", note);
  /* Alone, or the launcher gave this rank exactly one device of its own (srun
   * --gpus-per-task=1, --gpu-bind=single:1, a MIG instance, a per-rank CUDA_VISIBLE_DEVICES):
   * the one visible device is this rank's, whatever the local rank. With the variable unset
   * nothing was bound: one visible GPU is then the node's only one, and several ranks on it
   * are refused below. */
  if (local_rank < 0 || (visible_gpus == 1 && cuda_visible_devices)) {
    *device = 0;
    return DT_OK;
  }
  /* A local rank at or past local_size would be a caller's mistake; count it as a rank so
   * the check below still holds. */
  const int ranks = local_size > local_rank ? local_size : local_rank + 1;
  if (ranks > visible_gpus)
    return dt_error_set(DT_ERR_CONFIG,
                        "%d ranks on this node but only %d GPUs visible (%s); start at most %d "
                        "ranks per node, e.g. mpirun --map-by ppr:%d:node, give each rank one GPU "
                        "of its own (srun --gpus-per-task=1), or use --device cpu",
                        ranks, visible_gpus, note, visible_gpus, visible_gpus);
  *device = local_rank;
  return DT_OK;
}
