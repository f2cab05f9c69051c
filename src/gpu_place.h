/* gpu_place.h: which GPU a rank uses (DESIGN "Comm": device choice). A pure function, free of
 * CUDA headers, so that the policy is tested on machines without a GPU; the CUDA backend
 * (src/cuda/backend_cuda.c) applies it. */
#ifndef DT_GPU_PLACE_H
#define DT_GPU_PLACE_H

#include "common.h"

/* Pick the device index (as the CUDA runtime numbers the visible GPUs) for a rank.
 *   local_rank, local_size: this rank among the ranks of its node and their count
 *     (dt_comm_local_rank / dt_comm_local_size); local_rank < 0 for a process on its own.
 *   visible_gpus: what cudaGetDeviceCount reports (CUDA_VISIBLE_DEVICES already applied).
 *   cuda_visible_devices: getenv("CUDA_VISIBLE_DEVICES") or NULL, quoted in messages only.
 * One GPU per local rank, never shared: a process on its own takes GPU 0, local rank r takes
 * GPU r. Sharing a GPU between ranks would run, but slowly and with NCCL refusing two ranks on
 * one device, so more ranks than GPUs is a configuration error.
 * Returns DT_OK with *device set, or DT_ERR_CONFIG with a message (dt_error_set) that names
 * the rank and GPU counts, CUDA_VISIBLE_DEVICES and the fix; *device is then left alone. */
dt_status dt_gpu_place(int local_rank, int local_size, int visible_gpus,
                       const char *cuda_visible_devices, int *device);

#endif
