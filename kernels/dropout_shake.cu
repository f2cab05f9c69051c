/* dropout_shake.cu: kernels of the CUDA backend's random ops (src/cuda/cuda_dropout_shake.c):
 * dropout and shake-shake mixing. Layouts, threads and determinism: common.cuh. */
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
__global__ static void k_dropout_forward(const float *x, float *y, uint8_t *mask,
                                         const uint64_t *keys, float p, float scale, int n, int c,
                                         size_t hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, pix;
    int ch;
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &pix);
    const bool keep = dropout_uniform(keys[img], (uint64_t)ch * hw + pix) >= p;
    mask[i] = keep;
    y[i] = x[i] * (keep ? scale : 0.0f);
  }
}

__global__ static void k_dropout_backward(const float *dy, const uint8_t *mask, float *dx,
                                          float scale, size_t count) {
  DT_K_FOR(i, count) { dx[i] = dy[i] * (mask[i] ? scale : 0.0f); }
}

/* ---- shake-shake: alpha (N) ---- */

__global__ static void k_shake_forward(const float *a, const float *b, const float *alpha,
                                       float *y, size_t per, size_t count) {
  DT_K_FOR(i, count) {
    const float f = alpha[i / per];
    y[i] = f * a[i] + (1.0f - f) * b[i];
  }
}

__global__ static void k_shake_backward(const float *dy, const float *beta, float *da, float *db,
                                        size_t per, size_t count) {
  DT_K_FOR(i, count) {
    const float f = beta[i / per];
    if (da) da[i] = f * dy[i];
    if (db) db[i] = (1.0f - f) * dy[i];
  }
}

/* ---- launchers ---- */

extern "C" cudaError_t dt_k_dropout_forward(const float *x, float *y, uint8_t *mask,
                                            const uint64_t *keys, float p, float scale, int n,
                                            int c, size_t hw, bool nhwc, cudaStream_t stream) {
  DT_K_LAUNCH(k_dropout_forward, (size_t)n * c * hw, x, y, mask, keys, p, scale, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_dropout_backward(const float *dy, const uint8_t *mask, float *dx,
                                             float scale, size_t count, cudaStream_t stream) {
  DT_K_LAUNCH(k_dropout_backward, count, dy, mask, dx, scale, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shake_forward(const float *a, const float *b, const float *alpha,
                                          float *y, size_t per, size_t count,
                                          cudaStream_t stream) {
  DT_K_LAUNCH(k_shake_forward, count, a, b, alpha, y, per, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shake_backward(const float *dy, const float *beta, float *da,
                                           float *db, size_t per, size_t count,
                                           cudaStream_t stream) {
  DT_K_LAUNCH(k_shake_backward, count, dy, beta, da, db, per, count);
  return cudaGetLastError();
}
