/* optim.cu: the optimizer updates of the CUDA backend (backend.h, "optimizer updates") and
 * the non-finite check. They reproduce the CPU backend's float loops (src/cpu/cpu_optim.c)
 * bit for bit on the same inputs: every product and sum is rounded on its own (__fmul_rn,
 * __fadd_rn: no contraction into FMA, which nvcc would otherwise do), and division and square
 * root are IEEE-rounded (nvcc's defaults). The LARS norms are summed in double by a fixed
 * two-stage reduction, so they match the CPU's sequential sums to double rounding. */
#include "common.cuh"

#define OPT_NORM_BLOCKS 256 /* first-stage blocks of the LARS norms */

// g *= scale
__global__ static void k_scale(float *g, size_t n, float scale) {
  DT_K_FOR(j, n) { g[j] = __fmul_rn(g[j], scale); }
}

// d = g + wd w, rounded as the CPU computes it
__device__ static inline float decayed(float g, float w, float wd) {
  return __fadd_rn(g, __fmul_rn(wd, w));
}

__global__ static void k_sgd(float *w, const float *g, float *buf, size_t n, float lr, float m,
                             float wd, bool nesterov, bool first) {
  DT_K_FOR(j, n) {
    const float d = decayed(g[j], w[j], wd);
    const float b = first ? d : __fadd_rn(__fmul_rn(m, buf[j]), d);
    buf[j] = b;
    const float u = nesterov ? __fmul_rn(lr, __fadd_rn(d, __fmul_rn(m, b))) : __fmul_rn(lr, b);
    w[j] = __fsub_rn(w[j], u);
  }
}

// k_sgd over a whole arena in one launch: element j is updated like k_sgd with weight decay
// wd where mask[j] == 1, none where mask[j] == 2, and left alone where mask[j] == 0 (the
// padding between tensors); g is scaled in place first when scale != 1, as k_scale does.
__global__ static void k_sgd_multi(float *w, float *g, float *buf, const uint8_t *mask, size_t n,
                                   float lr, float m, float wd, bool nesterov, bool first,
                                   float scale) {
  DT_K_FOR(j, n) {
    const uint8_t k = mask[j];
    if (k == 0) continue;
    float gj = g[j];
    if (scale != 1.0f) {
      gj = __fmul_rn(gj, scale);
      g[j] = gj;
    }
    const float d = decayed(gj, w[j], k == 1 ? wd : 0.0f);
    const float b = first ? d : __fadd_rn(__fmul_rn(m, buf[j]), d);
    buf[j] = b;
    const float u = nesterov ? __fmul_rn(lr, __fadd_rn(d, __fmul_rn(m, b))) : __fmul_rn(lr, b);
    w[j] = __fsub_rn(w[j], u);
  }
}

// partial (2, OPT_NORM_BLOCKS) <- per-block sums of w^2 and g^2 in double
__global__ static void k_norm_partial(const float *w, const float *g, size_t n, double *partial) {
  __shared__ double sw[DT_K_BLOCK], sg[DT_K_BLOCK];
  double a = 0, b = 0;
  DT_K_FOR(j, n) {
    a += (double)w[j] * w[j];
    b += (double)g[j] * g[j];
  }
  sw[threadIdx.x] = a;
  sg[threadIdx.x] = b;
  __syncthreads();
  for (int s = DT_K_BLOCK / 2; s > 0; s /= 2) {
    if ((int)threadIdx.x < s) {
      sw[threadIdx.x] += sw[threadIdx.x + s];
      sg[threadIdx.x] += sg[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = sw[0];
    partial[OPT_NORM_BLOCKS + blockIdx.x] = sg[0];
  }
}

// scaled = (float)(lr r), the LARS trust ratio r of the CPU backend, from the partial sums
__global__ static void k_lars_ratio(const double *partial, double lr, float wd, double eps,
                                    double eta, double threshold, float *scaled) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double a = 0, b = 0;
  for (int i = 0; i < OPT_NORM_BLOCKS; i++) {
    a += partial[i];
    b += partial[OPT_NORM_BLOCKS + i];
  }
  const double wn = sqrt(a), gn = sqrt(b);
  double local = wn / (eps + gn + (double)wd * wn);
  if (eta > 0) local *= eta;
  if (wn < threshold) local = 1.0;
  *scaled = (float)(lr * local);
}

__global__ static void k_lars(float *w, const float *g, float *buf, size_t n, float m, float wd,
                              const float *scaled) {
  const float s = *scaled;
  DT_K_FOR(j, n) {
    const float d = decayed(g[j], w[j], wd);
    const float b = __fadd_rn(__fmul_rn(m, buf[j]), __fmul_rn(s, d));
    buf[j] = b;
    w[j] = __fsub_rn(w[j], b);
  }
}

__global__ static void k_adam(float *w, const float *g, float *m, float *v, float *vmax, size_t n,
                              float step, float b1, float b2, float eps, float bc2_sqrt,
                              float wd) {
  DT_K_FOR(j, n) {
    const float d = decayed(g[j], w[j], wd);
    const float mj = __fadd_rn(__fmul_rn(b1, m[j]), __fmul_rn(__fsub_rn(1.0f, b1), d));
    m[j] = mj;
    const float vj = __fadd_rn(__fmul_rn(b2, v[j]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, b2), d), d));
    v[j] = vj;
    float vv = vj;
    if (vmax) vv = vmax[j] = fmaxf(vmax[j], vj);
    const float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), bc2_sqrt), eps);
    w[j] = __fsub_rn(w[j], __fdiv_rn(__fmul_rn(step, mj), den));
  }
}

// *flag = 1 when some x is NaN or infinite (flag zeroed by the caller)
__global__ static void k_nonfinite(const float *x, size_t n, int *flag) {
  bool bad = false;
  DT_K_FOR(j, n) bad |= !isfinite(x[j]);
  if (bad) *flag = 1;
}

static cudaError_t scale_grad(float *g, size_t n, float scale, cudaStream_t stream) {
  if (scale == 1.0f) return cudaSuccess;
  k_scale<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(g, n, scale);
  return cudaGetLastError();
}

extern "C" size_t dt_k_lars_scratch_bytes(void) {
  return 2 * OPT_NORM_BLOCKS * sizeof(double) + sizeof(double);
}

extern "C" cudaError_t dt_k_sgd_update(float *w, float *g, float *buf, size_t n, float lr,
                                       float momentum, float wd, bool nesterov, bool first,
                                       float grad_scale, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = scale_grad(g, n, grad_scale, stream);
  if (e != cudaSuccess) return e;
  k_sgd<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, n, lr, momentum, wd, nesterov,
                                                   first);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sgd_update_multi(float *w, float *g, float *buf, const uint8_t *mask,
                                             size_t n, float lr, float momentum, float wd,
                                             bool nesterov, bool first, float grad_scale,
                                             cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  k_sgd_multi<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, mask, n, lr, momentum, wd,
                                                         nesterov, first, grad_scale);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_lars_update(float *w, float *g, float *buf, size_t n, double lr,
                                        float momentum, float wd, double eps, double eta,
                                        double threshold, float grad_scale, void *scratch,
                                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = scale_grad(g, n, grad_scale, stream);
  if (e != cudaSuccess) return e;
  double *partial = (double *)scratch;
  float *scaled = (float *)(partial + 2 * OPT_NORM_BLOCKS);
  k_norm_partial<<<OPT_NORM_BLOCKS, DT_K_BLOCK, 0, stream>>>(w, g, n, partial);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  k_lars_ratio<<<1, 1, 0, stream>>>(partial, lr, wd, eps, eta, threshold, scaled);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  k_lars<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, n, momentum, wd, scaled);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_adam_update(float *w, float *g, float *m, float *v, float *vmax,
                                        size_t n, float step, float beta1, float beta2,
                                        float eps, float bc2_sqrt, float wd, float grad_scale,
                                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = scale_grad(g, n, grad_scale, stream);
  if (e != cudaSuccess) return e;
  k_adam<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, m, v, vmax, n, step, beta1, beta2, eps,
                                                    bc2_sqrt, wd);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_nonfinite(const float *x, size_t n, int *flag, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  k_nonfinite<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(x, n, flag);
  return cudaGetLastError();
}
