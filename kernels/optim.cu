/* optim.cu: the optimizer updates of the CUDA backend (backend.h, "optimizer updates") and
 * the non-finite check. They reproduce the CPU backend's float loops (src/cpu/cpu_optim.c)
 * bit for bit on the same inputs: every product and sum is rounded on its own (__fmul_rn,
 * __fadd_rn: no contraction into FMA, which nvcc would otherwise do), and division and square
 * root are IEEE-rounded (nvcc's defaults). The LARS norms are summed in double by a fixed
 * two-stage reduction, so they match the CPU's sequential sums to double rounding; the
 * whole-arena versions (_multi) reproduce the per-tensor ones bit for bit, the LARS norms by
 * the same two stages run for every tensor at once (a segmented reduction, no atomics).
 * skip (backend.h): every kernel reads the device flag first and, when it is set, returns
 * before touching anything; the host never reads it. */
#include "common.cuh"

#define OPT_NORM_BLOCKS 256 /* first-stage blocks of the LARS norms (per tensor) */

// Whether the update is skipped: the flag set (NULL: never).
__device__ static inline bool skipped(const int32_t *skip) { return skip && *skip != 0; }

// g *= scale
__global__ static void k_scale(float *g, size_t n, float scale, const int32_t *skip) {
  if (skipped(skip)) return;
  DT_K_FOR(j, n) { g[j] = __fmul_rn(g[j], scale); }
}

// d = g + wd w, rounded as the CPU computes it
__device__ static inline float decayed(float g, float w, float wd) {
  return __fadd_rn(g, __fmul_rn(wd, w));
}

__global__ static void k_sgd(float *w, const float *g, float *buf, size_t n, float lr, float m,
                             float wd, bool nesterov, bool first, const int32_t *skip) {
  if (skipped(skip)) return;
  DT_K_FOR(j, n) {
    const float d = decayed(g[j], w[j], wd);
    const float b = first ? d : __fadd_rn(__fmul_rn(m, buf[j]), d);
    buf[j] = b;
    const float u = nesterov ? __fmul_rn(lr, __fadd_rn(d, __fmul_rn(m, b))) : __fmul_rn(lr, b);
    w[j] = __fsub_rn(w[j], u);
  }
}

// Element j of a masked arena (the _multi kernels): false for padding (mask 0); else its
// gradient, scaled in place first when scale != 1, and its weight decay (wd where mask 1, none
// where 2).
__device__ static inline bool arena_grad(float *g, const uint8_t *mask, size_t j, float scale,
                                         float wd, float *gj, float *wdj) {
  const uint8_t k = mask[j];
  if (k == 0) return false;
  float v = g[j];
  if (scale != 1.0f) {
    v = __fmul_rn(v, scale);
    g[j] = v;
  }
  *gj = v;
  *wdj = k == 1 ? wd : 0.0f;
  return true;
}

// k_sgd over a whole arena in one launch: element j is updated like k_sgd with weight decay
// wd where mask[j] == 1, none where mask[j] == 2, and left alone where mask[j] == 0 (the
// padding between tensors); g is scaled in place first when scale != 1, as k_scale does.
__global__ static void k_sgd_multi(float *w, float *g, float *buf, const uint8_t *mask, size_t n,
                                   float lr, float m, float wd, bool nesterov, bool first,
                                   float scale, const int32_t *skip) {
  if (skipped(skip)) return;
  DT_K_FOR(j, n) {
    float gj, wdj;
    if (!arena_grad(g, mask, j, scale, wd, &gj, &wdj)) continue;
    const float d = decayed(gj, w[j], wdj);
    const float b = first ? d : __fadd_rn(__fmul_rn(m, buf[j]), d);
    buf[j] = b;
    const float u = nesterov ? __fmul_rn(lr, __fadd_rn(d, __fmul_rn(m, b))) : __fmul_rn(lr, b);
    w[j] = __fsub_rn(w[j], u);
  }
}

// The first stage of a tensor's LARS norms, block b of OPT_NORM_BLOCKS: the sums of w^2 and
// g^2 (g times scale when scale != 1, rounded as k_scale rounds it) in double over the
// elements b DT_K_BLOCK + threadIdx.x + k OPT_NORM_BLOCKS DT_K_BLOCK, then over the block in a
// fixed tree. Written to partial[b] and partial[OPT_NORM_BLOCKS + b].
__device__ static void norm_block(const float *w, const float *g, size_t n, float scale, int b,
                                  double *partial) {
  __shared__ double sw[DT_K_BLOCK], sg[DT_K_BLOCK];
  if ((size_t)b * DT_K_BLOCK >= n) { /* no element (the whole block alike): sums of zeros */
    if (threadIdx.x == 0) partial[b] = partial[OPT_NORM_BLOCKS + b] = 0.0;
    return;
  }
  double a = 0, c = 0;
  for (size_t j = (size_t)b * DT_K_BLOCK + threadIdx.x; j < n;
       j += (size_t)OPT_NORM_BLOCKS * DT_K_BLOCK) {
    const float gj = scale != 1.0f ? __fmul_rn(g[j], scale) : g[j];
    a = __dadd_rn(a, __dmul_rn((double)w[j], (double)w[j]));
    c = __dadd_rn(c, __dmul_rn((double)gj, (double)gj));
  }
  sw[threadIdx.x] = a;
  sg[threadIdx.x] = c;
  __syncthreads();
  for (int s = DT_K_BLOCK / 2; s > 0; s /= 2) {
    if ((int)threadIdx.x < s) {
      sw[threadIdx.x] += sw[threadIdx.x + s];
      sg[threadIdx.x] += sg[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[b] = sw[0];
    partial[OPT_NORM_BLOCKS + b] = sg[0];
  }
}

// partial (2, OPT_NORM_BLOCKS) <- per-block sums of w^2 and g^2 in double (g already scaled)
__global__ static void k_norm_partial(const float *w, const float *g, size_t n, double *partial,
                                      const int32_t *skip) {
  if (skipped(skip)) return;
  norm_block(w, g, n, 1.0f, (int)blockIdx.x, partial);
}

// The same for every segment at once: block s OPT_NORM_BLOCKS + b is block b of segment s;
// partial (n_seg, 2, OPT_NORM_BLOCKS).
__global__ static void k_norm_partial_multi(const float *w, const float *g,
                                            const dt_optim_segment *seg, float scale,
                                            double *partial, const int32_t *skip) {
  if (skipped(skip)) return;
  const int s = (int)(blockIdx.x / OPT_NORM_BLOCKS), b = (int)(blockIdx.x % OPT_NORM_BLOCKS);
  const size_t off = seg[s].offset;
  norm_block(w + off, g + off, seg[s].count, scale, b, partial + (size_t)s * 2 * OPT_NORM_BLOCKS);
}

// (float)(lr r), the LARS trust ratio r of the CPU backend, from a tensor's partial sums,
// added in order; the denominator rounded step by step as the CPU computes it (no FMA that
// the compiler might contract differently where this is inlined)
__device__ static float lars_ratio(const double *partial, double lr, float wd, double eps,
                                   double eta, double threshold) {
  double a = 0, b = 0;
  for (int i = 0; i < OPT_NORM_BLOCKS; i++) {
    a += partial[i];
    b += partial[OPT_NORM_BLOCKS + i];
  }
  const double wn = sqrt(a), gn = sqrt(b);
  double local = wn / __dadd_rn(__dadd_rn(eps, gn), __dmul_rn((double)wd, wn));
  if (eta > 0) local *= eta;
  if (wn < threshold) local = 1.0;
  return (float)(lr * local);
}

// *scaled = lars_ratio of one tensor
__global__ static void k_lars_ratio(const double *partial, double lr, float wd, double eps,
                                    double eta, double threshold, float *scaled,
                                    const int32_t *skip) {
  if (blockIdx.x != 0 || threadIdx.x != 0 || skipped(skip)) return;
  *scaled = lars_ratio(partial, lr, wd, eps, eta, threshold);
}

// scaled[s] = lars_ratio of segment s, one thread per segment
__global__ static void k_lars_ratio_multi(const double *partial, const dt_optim_segment *seg,
                                          int n_seg, double lr, double eps, double eta,
                                          double threshold, float *scaled,
                                          const int32_t *skip) {
  if (skipped(skip)) return;
  const int s = (int)(blockIdx.x * blockDim.x + threadIdx.x);
  if (s >= n_seg) return;
  scaled[s] = lars_ratio(partial + (size_t)s * 2 * OPT_NORM_BLOCKS, lr, seg[s].wd, eps, eta,
                         threshold);
}

// buf = m buf + s d, w -= buf for one element (g already scaled)
__device__ static inline void lars_elem(float *w, float g, float *buf, float m, float wd,
                                        float s) {
  const float d = decayed(g, *w, wd);
  const float b = __fadd_rn(__fmul_rn(m, *buf), __fmul_rn(s, d));
  *buf = b;
  *w = __fsub_rn(*w, b);
}

__global__ static void k_lars(float *w, const float *g, float *buf, size_t n, float m, float wd,
                              const float *scaled, const int32_t *skip) {
  if (skipped(skip)) return;
  const float s = *scaled;
  DT_K_FOR(j, n) { lars_elem(&w[j], g[j], &buf[j], m, wd, s); }
}

// k_scale and k_lars over the whole arena: element j is updated with the trust ratio and
// weight decay of the segment that holds it (found by binary search in the table), left
// alone outside every segment.
__global__ static void k_lars_multi(float *w, float *g, float *buf, size_t n,
                                    const dt_optim_segment *seg, int n_seg, float m, float scale,
                                    const float *scaled, const int32_t *skip) {
  if (skipped(skip)) return;
  DT_K_FOR(j, n) {
    int lo = 0, hi = n_seg; /* the last segment with offset <= j: in [lo, hi) */
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (seg[mid].offset <= j) lo = mid;
      else hi = mid;
    }
    if (j < seg[lo].offset || j >= seg[lo].offset + seg[lo].count) continue;
    float gj = g[j];
    if (scale != 1.0f) {
      gj = __fmul_rn(gj, scale);
      g[j] = gj;
    }
    lars_elem(&w[j], gj, &buf[j], m, seg[lo].wd, scaled[lo]);
  }
}

// One Adam / AMSGrad element (vmax NULL: Adam), g already scaled.
__device__ static inline void adam_elem(float *w, float g, float *m, float *v, float *vmax,
                                        float step, float b1, float b2, float eps,
                                        float bc2_sqrt, float wd) {
  const float d = decayed(g, *w, wd);
  const float mj = __fadd_rn(__fmul_rn(b1, *m), __fmul_rn(__fsub_rn(1.0f, b1), d));
  *m = mj;
  const float vj = __fadd_rn(__fmul_rn(b2, *v), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, b2), d), d));
  *v = vj;
  float vv = vj;
  if (vmax) vv = *vmax = fmaxf(*vmax, vj);
  const float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), bc2_sqrt), eps);
  *w = __fsub_rn(*w, __fdiv_rn(__fmul_rn(step, mj), den));
}

__global__ static void k_adam(float *w, const float *g, float *m, float *v, float *vmax, size_t n,
                              float step, float b1, float b2, float eps, float bc2_sqrt,
                              float wd, const int32_t *skip) {
  if (skipped(skip)) return;
  DT_K_FOR(j, n) {
    adam_elem(&w[j], g[j], &m[j], &v[j], vmax ? &vmax[j] : NULL, step, b1, b2, eps, bc2_sqrt,
              wd);
  }
}

// k_adam over a whole arena in one launch, with k_sgd_multi's mask (1: decayed, 2: not,
// 0: padding, left alone) and g scaled in place first when scale != 1.
__global__ static void k_adam_multi(float *w, float *g, float *m, float *v, float *vmax,
                                    const uint8_t *mask, size_t n, float step, float b1,
                                    float b2, float eps, float bc2_sqrt, float wd, float scale,
                                    const int32_t *skip) {
  if (skipped(skip)) return;
  DT_K_FOR(j, n) {
    float gj, wdj;
    if (!arena_grad(g, mask, j, scale, wd, &gj, &wdj)) continue;
    adam_elem(&w[j], gj, &m[j], &v[j], vmax ? &vmax[j] : NULL, step, b1, b2, eps, bc2_sqrt, wdj);
  }
}

// *flag = 1 when some x is NaN or infinite (flag zeroed by the caller)
__global__ static void k_nonfinite(const float *x, size_t n, int *flag) {
  bool bad = false;
  DT_K_FOR(j, n) bad |= !isfinite(x[j]);
  if (bad) *flag = 1;
}

static cudaError_t scale_grad(float *g, size_t n, float scale, const int32_t *skip,
                              cudaStream_t stream) {
  if (scale == 1.0f) return cudaSuccess;
  k_scale<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(g, n, scale, skip);
  return cudaGetLastError();
}

extern "C" size_t dt_k_lars_scratch_bytes(void) {
  return 2 * OPT_NORM_BLOCKS * sizeof(double) + sizeof(double);
}

extern "C" size_t dt_k_lars_multi_scratch_bytes(int n_seg) {
  return (size_t)n_seg * (2 * OPT_NORM_BLOCKS * sizeof(double) + sizeof(float));
}

extern "C" cudaError_t dt_k_sgd_update(float *w, float *g, float *buf, size_t n, float lr,
                                       float momentum, float wd, bool nesterov, bool first,
                                       float grad_scale, const int32_t *skip,
                                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = scale_grad(g, n, grad_scale, skip, stream);
  if (e != cudaSuccess) return e;
  k_sgd<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, n, lr, momentum, wd, nesterov,
                                                   first, skip);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sgd_update_multi(float *w, float *g, float *buf, const uint8_t *mask,
                                             size_t n, float lr, float momentum, float wd,
                                             bool nesterov, bool first, float grad_scale,
                                             const int32_t *skip, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  k_sgd_multi<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, mask, n, lr, momentum, wd,
                                                         nesterov, first, grad_scale, skip);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_lars_update(float *w, float *g, float *buf, size_t n, double lr,
                                        float momentum, float wd, double eps, double eta,
                                        double threshold, float grad_scale, void *scratch,
                                        const int32_t *skip, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = scale_grad(g, n, grad_scale, skip, stream);
  if (e != cudaSuccess) return e;
  double *partial = (double *)scratch;
  float *scaled = (float *)(partial + 2 * OPT_NORM_BLOCKS);
  k_norm_partial<<<OPT_NORM_BLOCKS, DT_K_BLOCK, 0, stream>>>(w, g, n, partial, skip);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  k_lars_ratio<<<1, 1, 0, stream>>>(partial, lr, wd, eps, eta, threshold, scaled, skip);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  k_lars<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, n, momentum, wd, scaled, skip);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_lars_update_multi(float *w, float *g, float *buf,
                                              const dt_optim_segment *seg, int n_seg, size_t n,
                                              double lr, float momentum, double eps, double eta,
                                              double threshold, float grad_scale, void *scratch,
                                              const int32_t *skip, cudaStream_t stream) {
  if (n == 0 || n_seg == 0) return cudaSuccess;
  double *partial = (double *)scratch;
  float *scaled = (float *)(partial + (size_t)n_seg * 2 * OPT_NORM_BLOCKS);
  k_norm_partial_multi<<<(unsigned)n_seg * OPT_NORM_BLOCKS, DT_K_BLOCK, 0, stream>>>(
      w, g, seg, grad_scale, partial, skip);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  k_lars_ratio_multi<<<(n_seg + DT_K_BLOCK - 1) / DT_K_BLOCK, DT_K_BLOCK, 0, stream>>>(
      partial, seg, n_seg, lr, eps, eta, threshold, scaled, skip);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  k_lars_multi<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, buf, n, seg, n_seg, momentum,
                                                          grad_scale, scaled, skip);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_adam_update(float *w, float *g, float *m, float *v, float *vmax,
                                        size_t n, float step, float beta1, float beta2,
                                        float eps, float bc2_sqrt, float wd, float grad_scale,
                                        const int32_t *skip, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = scale_grad(g, n, grad_scale, skip, stream);
  if (e != cudaSuccess) return e;
  k_adam<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, m, v, vmax, n, step, beta1, beta2, eps,
                                                    bc2_sqrt, wd, skip);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_adam_update_multi(float *w, float *g, float *m, float *v,
                                              float *vmax, const uint8_t *mask, size_t n,
                                              float step, float beta1, float beta2, float eps,
                                              float bc2_sqrt, float wd, float grad_scale,
                                              const int32_t *skip, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  k_adam_multi<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(w, g, m, v, vmax, mask, n, step, beta1,
                                                          beta2, eps, bc2_sqrt, wd, grad_scale,
                                                          skip);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_nonfinite(const float *x, size_t n, int *flag, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  k_nonfinite<<<dt_k_blocks(n), DT_K_BLOCK, 0, stream>>>(x, n, flag);
  return cudaGetLastError();
}
