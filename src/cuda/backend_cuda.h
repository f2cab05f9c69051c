/* backend_cuda.h: the constructor of the CUDA backend (src/cuda/, kernels/), called by
 * dt_backend_create (src/backend_factory.c) for DT_DEVICE_CUDA in builds with DT_HAVE_CUDA. Nothing
 * else includes it but tests/test_backend_table.c: model and training code reach the backend
 * through src/backend.h only. */
#ifndef DT_BACKEND_CUDA_H
#define DT_BACKEND_CUDA_H

#include "backend.h"

/* The CUDA backend on the GPU of this process, with one stream, a cuDNN and a cuBLAS handle:
 * one GPU per node-local rank (dt_gpu_place: GPU local_rank of those CUDA_VISIBLE_DEVICES
 * leaves visible; GPU 0 when local_rank < 0 or when exactly one GPU is visible). threads is
 * recorded only (the host side is single-threaded). Returns NULL with DT_ERR_CONFIG set (dt_error_set) when no usable GPU or
 * driver is present, or when the node has more local ranks than visible GPUs (two or more). */
dt_backend *dt_backend_cuda_create(int threads, int local_rank, int local_size);

/* The CUDA backend's table of ops, for a check that needs no GPU (tests/test_backend_table.c). */
const dt_backend_ops *dt_backend_cuda_ops(void);

#endif
