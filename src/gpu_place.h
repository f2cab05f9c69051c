/* gpu_place.h: which GPU a rank uses (docs/architecture.md "Comm": device choice). A pure function,
 * free of CUDA headers, so that the policy is tested on machines without a GPU; the CUDA backend
 * (src/cuda/backend_cuda.c) applies it. */
#ifndef DT_GPU_PLACE_H
#define DT_GPU_PLACE_H

#include "common.h"

/* Pick the device index (as the CUDA runtime numbers the visible GPUs) for a rank.
 *   local_rank, local_size: this rank among the ranks of its node and their count
 *     (dt_comm_local_rank / dt_comm_local_size); local_rank < 0 for a process on its own.
 *   visible_gpus: what cudaGetDeviceCount reports (CUDA_VISIBLE_DEVICES already applied).
 *   cuda_visible_devices: getenv("CUDA_VISIBLE_DEVICES") or NULL, quoted in messages only.
 * One GPU per local rank, never shared: a process on its own takes GPU 0; a rank that sees
 * exactly one GPU through CUDA_VISIBLE_DEVICES takes it (the launcher bound one device to
 * each rank: srun --gpus-per-task=1, --gpu-bind=single:1, a MIG instance); otherwise local rank r takes GPU r
 * of those it sees. Sharing a GPU between ranks would run, but slowly and with NCCL refusing
 * two ranks on one device, so more ranks than visible GPUs (two or more) is a configuration
 * error. Ranks that each see one GPU, the same one, are left to NCCL, which refuses them
 * ("Duplicate GPU detected") at communicator creation.
 * Returns DT_OK with *device set, or DT_ERR_CONFIG with a message (dt_error_set) that names
 * the rank and GPU counts, CUDA_VISIBLE_DEVICES and the fix; *device is then left alone. */
dt_status dt_gpu_place(int local_rank, int local_size, int visible_gpus,
                       const char *cuda_visible_devices, int *device);

#endif
