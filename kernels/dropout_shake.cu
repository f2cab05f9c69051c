/* dropout_shake.cu: kernels of the CUDA backend's random ops (src/cuda/cuda_dropout_shake.c):
 * dropout and shake-shake mixing. Layouts, element types, threads and determinism: common.cuh. */
#include "common.cuh"

/* ---- dropout ---- */

/* dt_dropout_uniform of backend.h (a host function), for the device: keep the two in step. */
__device__ static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ static inline float dropout_uniform(uint64_t key, uint64_t e) {
  const uint64_t z = mix64(mix64(key) + (e + 1) * 0x9E3779B97F4A7C15ull);
  return (float)(z >> 40) * 0x1.0p-24f;
}

// keep element e = c H W + p of sample n when its uniform is >= p; y = x * keep / (1 - p)
template <typename T>
__global__ static void k_dropout_forward(const T *x, T *y, uint8_t *mask,
                                         const uint64_t *keys, float p, float scale, int n, int c,
                                         size_t hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, pix;
    int ch;
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &pix);
    const bool keep = dropout_uniform(keys[img], (uint64_t)ch * hw + pix) >= p;
    mask[i] = keep;
    dt_k_st(y, i, dt_k_ld(x, i) * (keep ? scale : 0.0f));
  }
}

template <typename T>
__global__ static void k_dropout_backward(const T *dy, const uint8_t *mask, T *dx, float scale,
                                          size_t count) {
  DT_K_FOR(i, count) { dt_k_st(dx, i, dt_k_ld(dy, i) * (mask[i] ? scale : 0.0f)); }
}

/* ---- shake-shake: alpha (N) ---- */

template <typename T>
__global__ static void k_shake_forward(const T *a, const T *b, const float *alpha, T *y,
                                       size_t per, size_t count) {
  DT_K_FOR(i, count) {
    const float f = alpha[i / per];
    dt_k_st(y, i, f * dt_k_ld(a, i) + (1.0f - f) * dt_k_ld(b, i));
  }
}

template <typename T>
__global__ static void k_shake_backward(const T *dy, const float *beta, T *da, T *db, size_t per,
                                        size_t count) {
  DT_K_FOR(i, count) {
    const float f = beta[i / per];
    if (da) dt_k_st(da, i, f * dt_k_ld(dy, i));
    if (db) dt_k_st(db, i, (1.0f - f) * dt_k_ld(dy, i));
  }
}

/* ---- launchers ---- */

extern "C" cudaError_t dt_k_dropout_forward(const void *x, void *y, uint8_t *mask,
                                            const uint64_t *keys, float p, float scale, int n,
                                            int c, size_t hw, bool nhwc, dt_cuda_dtype dt,
                                            cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_dropout_forward<T>, (size_t)n * c * hw, (const T *)x, (T *)y, mask, keys,
                         p, scale, n, c, hw, nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_dropout_backward(const void *dy, const uint8_t *mask, void *dx,
                                             float scale, size_t count, dt_cuda_dtype dt,
                                             cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_dropout_backward<T>, count, (const T *)dy, mask, (T *)dx, scale, count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shake_forward(const void *a, const void *b, const float *alpha,
                                          void *y, size_t per, size_t count, dt_cuda_dtype dt,
                                          cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_shake_forward<T>, count, (const T *)a, (const T *)b, alpha, (T *)y, per,
                         count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shake_backward(const void *dy, const float *beta, void *da, void *db,
                                           size_t per, size_t count, dt_cuda_dtype dt,
                                           cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_shake_backward<T>, count, (const T *)dy, beta, (T *)da, (T *)db, per,
                         count));
  return cudaGetLastError();
}
