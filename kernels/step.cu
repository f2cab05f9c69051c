/* step.cu: kernels of a training step's device-side bookkeeping (cuda_step_kernels.h): the
 * gradient sums and Dual-Cutout's logit gradient (axpy), the training top-1 count and
 * Dual-Cutout's squared logit differences. Each reproduces the CPU backend's loops
 * (src/cpu/cpu_step.c) bit for bit: explicit roundings where nvcc would fuse a multiply-add,
 * sums in the CPU's order. */
#include "common.cuh"

#include "cuda/cuda_step_kernels.h"

__global__ static void k_axpy(float *y, const float *x, const float *x2, size_t n, float a) {
  DT_K_FOR(i, n) {
    const float d = x2 ? __fsub_rn(x[i], x2[i]) : x[i];
    y[i] = __fadd_rn(y[i], __fmul_rn(a, d));
  }
}

extern "C" cudaError_t dt_k_axpy(float *y, const float *x, const float *x2, size_t n, float a,
                                 cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DT_K_LAUNCH(k_axpy, n, y, x, x2, n, a);
  return cudaGetLastError();
}

/* Element c of row i of z1, or of 0.5f (z1 + z2). */
__device__ static inline float top1_z(const float *z1, const float *z2, size_t i, int k, int c) {
  const size_t at = i * (size_t)k + (size_t)c;
  return z2 ? __fmul_rn(0.5f, __fadd_rn(z1[at], z2[at])) : z1[at];
}

/* The value of row i: 1 / 0 for a label that ranks first (no class above it, none equal
 * before it), or the target weight of the first maximum. */
__device__ static double top1_row(const float *z1, const float *z2, const float *t,
                                  const int32_t *labels, size_t i, int k) {
  if (labels) {
    const int label = labels[i];
    const float zl = top1_z(z1, z2, i, k, label);
    for (int c = 0; c < k; c++) {
      const float zc = top1_z(z1, z2, i, k, c);
      if (zc > zl || (zc == zl && c < label)) return 0.0;
    }
    return 1.0;
  }
  int best = 0;
  float zb = top1_z(z1, z2, i, k, 0);
  for (int c = 1; c < k; c++) {
    const float zc = top1_z(z1, z2, i, k, c);
    if (zc > zb) best = c, zb = zc;
  }
  return (double)t[i * (size_t)k + (size_t)best];
}

#define DT_TOP1_CHUNK 2048

/* One block: the rows of a chunk in parallel into shared memory, then thread 0 adds them in
 * row order. */
__global__ static void k_top1(const float *z1, const float *z2, const float *t,
                              const int32_t *labels, int n, int k, double *correct) {
  __shared__ double rows[DT_TOP1_CHUNK];
  double sum = 0;
  for (int first = 0; first < n; first += DT_TOP1_CHUNK) {
    const int count = min(DT_TOP1_CHUNK, n - first);
    for (int r = threadIdx.x; r < count; r += blockDim.x)
      rows[r] = top1_row(z1, z2, t, labels, (size_t)(first + r), k);
    __syncthreads();
    if (threadIdx.x == 0)
      for (int r = 0; r < count; r++) sum += rows[r];
    __syncthreads();
  }
  if (threadIdx.x == 0) *correct += sum;
}

extern "C" cudaError_t dt_k_top1(const float *z1, const float *z2, const float *t,
                                 const int32_t *labels, int n, int k, double *correct,
                                 cudaStream_t stream) {
  k_top1<<<1, DT_K_BLOCK, 0, stream>>>(z1, z2, t, labels, n, k, correct);
  return cudaGetLastError();
}

__global__ static void k_sq_diff_rows(const float *a, const float *b, int n, int k, double *out) {
  DT_K_FOR(i, (size_t)n) {
    double s = 0;
    for (int c = 0; c < k; c++) {
      const double d = (double)a[i * (size_t)k + c] - (double)b[i * (size_t)k + c];
      s = __dadd_rn(s, __dmul_rn(d, d));
    }
    out[i] = s;
  }
}

extern "C" cudaError_t dt_k_sq_diff_rows(const float *a, const float *b, int n, int k,
                                         double *out, cudaStream_t stream) {
  DT_K_LAUNCH(k_sq_diff_rows, (size_t)n, a, b, n, k, out);
  return cudaGetLastError();
}
