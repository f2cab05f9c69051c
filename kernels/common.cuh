/* common.cuh: launch helpers shared by the CUDA backend's kernels (the .cu files of kernels/). */
#ifndef DT_KERNELS_COMMON_CUH
#define DT_KERNELS_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>

#include "cuda/cuda_kernels.h"

/* Threads per block of the one-dimensional kernels. */
#define DT_K_BLOCK 256

/* Blocks for `count` elements with grid-stride loops (at most 2^20 blocks). */
static inline unsigned dt_k_blocks(size_t count) {
  size_t b = (count + DT_K_BLOCK - 1) / DT_K_BLOCK;
  if (b < 1) b = 1;
  if (b > ((size_t)1 << 20)) b = (size_t)1 << 20;
  return (unsigned)b;
}

/* Grid-stride loop over [0, count). */
#define DT_K_FOR(i, count)                                                             \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(count); \
       i += (size_t)gridDim.x * blockDim.x)

/* Offset of element (row r of the N hw rows, channel ch) in (N, hw, C) or (N, C, hw). */
__device__ static inline size_t dt_k_at(size_t r, int ch, int c, int hw, bool nhwc) {
  if (nhwc) return r * (size_t)c + (size_t)ch;
  const size_t n = r / (size_t)hw, p = r % (size_t)hw;
  return (n * (size_t)c + (size_t)ch) * (size_t)hw + p;
}

/* Channel of the element at offset i of an (N, hw, C) or (N, C, hw) tensor. */
__device__ static inline int dt_k_channel(size_t i, int c, int hw, bool nhwc) {
  return nhwc ? (int)(i % (size_t)c) : (int)((i / (size_t)hw) % (size_t)c);
}

#endif
