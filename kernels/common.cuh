/* common.cuh: launch helpers shared by the CUDA backend's kernels (the .cu files of kernels/). */
#ifndef DT_KERNELS_COMMON_CUH
#define DT_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
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

/* The ops' kernels (pool.cu, concat_pad_shift.cu, dropout_shake.cu, sigmoid_scale_bias.cu) take
 * tensors (N, C, H, W) stored as NCHW or NHWC (`nhwc` flags, one per operand where the shapes
 * differ). One thread per element of the output, which it computes whole: backward passes that
 * fan in (pooling) gather over the outputs that read an input instead of scattering with
 * atomics, and reductions (bias and scale gradients) run one thread per (n, c) over H W in
 * double, then over N in a fixed order, so every result is deterministic. */

/* Offset of (n, c, p) in an (N, C, hw) tensor, p = h W + w. */
__device__ static inline size_t dt_k_at4(size_t n, int c, size_t p, int C, size_t hw, bool nhwc) {
  return nhwc ? (n * hw + p) * (size_t)C + (size_t)c : (n * (size_t)C + (size_t)c) * hw + p;
}

/* The (n, c, p) of storage offset i. */
__device__ static inline void dt_k_coords(size_t i, int C, size_t hw, bool nhwc, size_t *n,
                                          int *c, size_t *p) {
  const size_t per = (size_t)C * hw, r = i % per;
  *n = i / per;
  if (nhwc) {
    *p = r / (size_t)C;
    *c = (int)(r % (size_t)C);
  } else {
    *c = (int)(r / hw);
    *p = r % hw;
  }
}

/* ---- element types (cuda_dtype.h) ----
 * Activation kernels are templates on their element type T, instantiated for float (the fp32
 * path: dt_k_ld and dt_k_st are then plain reads and writes, so fp32 results are those of the
 * float kernels before the templates), __nv_bfloat16 and __half: each element is loaded to
 * float, computed in float and stored rounded to nearest even. */
__device__ static inline float dt_k_ld(const float *p, size_t i) { return p[i]; }
__device__ static inline float dt_k_ld(const __nv_bfloat16 *p, size_t i) {
  return __bfloat162float(p[i]);
}
__device__ static inline float dt_k_ld(const __half *p, size_t i) { return __half2float(p[i]); }

__device__ static inline void dt_k_st(float *p, size_t i, float v) { p[i] = v; }
__device__ static inline void dt_k_st(__nv_bfloat16 *p, size_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}
__device__ static inline void dt_k_st(__half *p, size_t i, float v) { p[i] = __float2half_rn(v); }

/* Run `stmt` (a statement that names the type T) with T the C++ type of the element type dt;
 * an unknown dt makes the enclosing launcher return cudaErrorInvalidValue. */
#define DT_K_TYPED(dt, T, ...)                                                      \
  do {                                                                              \
    switch (dt) {                                                                   \
      case DT_CUDA_F32: { typedef float T; __VA_ARGS__; } break;                    \
      case DT_CUDA_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break;           \
      case DT_CUDA_F16: { typedef __half T; __VA_ARGS__; } break;                   \
      default: return cudaErrorInvalidValue;                                        \
    }                                                                               \
  } while (0)

/* The same over two element types, T1 of dt1 and T2 of dt2 (mixed-type copies). */
#define DT_K_TYPED2(dt1, T1, dt2, T2, ...)                                          \
  DT_K_TYPED(dt1, T1, DT_K_TYPED(dt2, T2, __VA_ARGS__))

/* Launch kernel over `count` elements on `stream` (a variable of the caller). */
#define DT_K_LAUNCH(kernel, count, ...)                                         \
  do {                                                                          \
    kernel<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(__VA_ARGS__);         \
  } while (0)

#endif
