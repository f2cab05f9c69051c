/* bn.cu: batch normalisation kernels of the CUDA backend, over the m = N hw rows of each
 * channel of an (N, hw, C) or (N, C, hw) tensor of any element type (common.cuh): statistics,
 * sums and coefficients stay fp32 / double whatever the tensors' type.
 *
 * Reductions are two kernels: blocks of 32 channels x 8 row-threads walk a slice of the rows
 * and write per-block partial sums in double to `partial` (2 x R x C); then one warp per
 * channel adds its R partials (lane l the rows l, l + 32, ..., then the 32 lane sums in a
 * fixed shuffle tree: results do not depend on scheduling) and derives the statistics. The
 * elementwise kernels then apply them (with the ReLU fused where the layer has one). */
#include "common.cuh"

#define BN_TX 32            /* channels per block */
#define BN_TY 8             /* row-threads per block */
#define BN_ROWS_PER_THREAD 32
#define BN_MAX_PARTIAL_ROWS 1024

extern "C" int dt_k_bn_partial_rows(int n, int hw) {
  const long m = (long)n * hw;
  long r = (m + BN_TY * BN_ROWS_PER_THREAD - 1) / (BN_TY * BN_ROWS_PER_THREAD);
  if (r < 1) r = 1;
  if (r > BN_MAX_PARTIAL_ROWS) r = BN_MAX_PARTIAL_ROWS;
  return (int)r;
}

/* Block-level sum of a and b over threadIdx.y; thread (x, 0) writes the partials of its
 * channel. */
__device__ static void bn_block_partial(double a, double b, double *partial, int c, int ch) {
  __shared__ double sa[BN_TY][BN_TX], sb[BN_TY][BN_TX];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    for (int t = 1; t < BN_TY; t++) {
      a += sa[t][threadIdx.x];
      b += sb[t][threadIdx.x];
    }
    const size_t rows = gridDim.y;
    partial[(size_t)blockIdx.y * c + ch] = a;
    partial[(rows + blockIdx.y) * (size_t)c + ch] = b;
  }
}

// partial (2, R, C) <- sums of x and x^2 over the rows of each channel
template <typename T>
__global__ static void k_bn_stats_partial(const T *x, double *partial, int n, int c, int hw,
                                          bool nhwc) {
  const int ch = blockIdx.x * BN_TX + threadIdx.x;
  const size_t m = (size_t)n * hw;
  double s = 0, q = 0;
  if (ch < c)
    for (size_t r = (size_t)blockIdx.y * BN_TY + threadIdx.y; r < m;
         r += (size_t)gridDim.y * BN_TY) {
      const double v = dt_k_ld(x, dt_k_at(r, ch, c, hw, nhwc));
      s += v;
      q += v * v;
    }
  bn_block_partial(s, q, partial, c, ch);
}

/* The sums of channel ch's R partials in each half of `partial` (rows [0, R) and [R, 2R)),
 * added by one warp in a fixed order; lane 0 gets them. Every lane of the warp must call it. */
__device__ static void bn_warp_sums(const double *partial, int rows, int c, int ch, double *a,
                                    double *b) {
  double s = 0, q = 0;
  for (int r = (int)(threadIdx.x & 31); r < rows; r += 32) {
    s += partial[(size_t)r * c + ch];
    q += partial[((size_t)rows + r) * c + ch];
  }
  for (int off = 16; off > 0; off >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, off);
    q += __shfl_down_sync(0xffffffffu, q, off);
  }
  *a = s;
  *b = q;
}

/* The channel of this thread's warp in the final kernels (32 threads per channel). */
__device__ static inline int bn_warp_channel(void) {
  return (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
}

static unsigned bn_final_blocks(int c) {
  return (unsigned)(((size_t)c * 32 + DT_K_BLOCK - 1) / DT_K_BLOCK);
}

// per channel (a warp each): mean, biased variance, running statistics, the apply kernel's copies
__global__ static void k_bn_stats_final(const double *partial, int rows, int c, double m,
                                        float eps, float momentum, float *save_mean,
                                        float *save_var, float *running_mean, float *running_var,
                                        float *mean_f, float *invstd_f) {
  const int j = bn_warp_channel();
  if (j >= c) return; /* the whole warp: j is the same on its lanes */
  double s, q;
  bn_warp_sums(partial, rows, c, j, &s, &q);
  if ((threadIdx.x & 31) != 0) return;
  const double mean = s / m;
  double var = q / m - mean * mean;
  if (var < 0) var = 0;
  if (save_mean) save_mean[j] = (float)mean;
  if (save_var) save_var[j] = (float)var;
  const double mom = momentum;
  if (running_mean) running_mean[j] = (float)((1.0 - mom) * running_mean[j] + mom * mean);
  if (running_var) {
    /* PyTorch's unbiased estimate; a single row has none, so keep the biased one. */
    const double unbiased = m > 1 ? var * m / (m - 1) : var;
    running_var[j] = (float)((1.0 - mom) * running_var[j] + mom * unbiased);
  }
  mean_f[j] = (float)mean;
  invstd_f[j] = (float)(1.0 / sqrt(var + (double)eps));
}

// y = gamma (x - mean) invstd + beta, relu and its mask when asked
template <typename T>
__global__ static void k_bn_apply(const T *x, T *y, uint8_t *mask, const float *mean,
                                  const float *invstd, const float *gamma, const float *beta,
                                  size_t count, int c, int hw, bool nhwc, bool relu) {
  DT_K_FOR(i, count) {
    const int ch = dt_k_channel(i, c, hw, nhwc);
    float v = gamma[ch] * ((dt_k_ld(x, i) - mean[ch]) * invstd[ch]) + beta[ch];
    if (relu) {
      if (v < 0.0f) v = 0.0f;
      mask[i] = v > 0.0f;
    }
    dt_k_st(y, i, v);
  }
}

template <typename T>
__global__ static void k_bn_infer(const T *x, T *y, const float *rmean, const float *rvar,
                                  const float *gamma, const float *beta, float eps, size_t count,
                                  int c, int hw, bool nhwc, bool relu) {
  DT_K_FOR(i, count) {
    const int ch = dt_k_channel(i, c, hw, nhwc);
    const float invstd = 1.0f / sqrtf(rvar[ch] + eps);
    float v = gamma[ch] * ((dt_k_ld(x, i) - rmean[ch]) * invstd) + beta[ch];
    if (relu && v < 0.0f) v = 0.0f;
    dt_k_st(y, i, v);
  }
}

// partial (2, R, C) <- sums of dy and dy xhat (dy masked by the ReLU mask when given)
template <typename T>
__global__ static void k_bn_bwd_partial(const T *x, const T *dy, const uint8_t *mask,
                                        const float *save_mean, const float *save_var, float eps,
                                        double *partial, int n, int c, int hw, bool nhwc) {
  const int ch = blockIdx.x * BN_TX + threadIdx.x;
  const size_t m = (size_t)n * hw;
  double s = 0, q = 0;
  if (ch < c) {
    const double mean = save_mean[ch], invstd = 1.0 / sqrt((double)save_var[ch] + (double)eps);
    for (size_t r = (size_t)blockIdx.y * BN_TY + threadIdx.y; r < m;
         r += (size_t)gridDim.y * BN_TY) {
      const size_t at = dt_k_at(r, ch, c, hw, nhwc);
      const double d = (mask && !mask[at]) ? 0.0 : (double)dt_k_ld(dy, at);
      s += d;
      q += d * (((double)dt_k_ld(x, at) - mean) * invstd);
    }
  }
  bn_block_partial(s, q, partial, c, ch);
}

// per channel (a warp each): dbeta, dgamma, and coef (5, C) = gamma invstd, dbeta / m,
// dgamma / m, mean, invstd
__global__ static void k_bn_bwd_final(const double *partial, int rows, int c, double m,
                                      const float *save_mean, const float *save_var,
                                      const float *gamma, float eps, float *dgamma, float *dbeta,
                                      float *coef) {
  const int j = bn_warp_channel();
  if (j >= c) return; /* the whole warp */
  double s, q;
  bn_warp_sums(partial, rows, c, j, &s, &q);
  if ((threadIdx.x & 31) != 0) return;
  const double invstd = 1.0 / sqrt((double)save_var[j] + (double)eps);
  dbeta[j] = (float)s;
  dgamma[j] = (float)q;
  coef[j] = (float)(gamma[j] * invstd);
  coef[(size_t)c + j] = (float)(s / m);
  coef[2 * (size_t)c + j] = (float)(q / m);
  coef[3 * (size_t)c + j] = save_mean[j];
  coef[4 * (size_t)c + j] = (float)invstd;
}

// dx = gamma invstd (dy - dbeta / m - xhat dgamma / m)
template <typename T>
__global__ static void k_bn_bwd_dx(const T *x, const T *dy, const uint8_t *mask,
                                   const float *coef, T *dx, size_t count, int c, int hw,
                                   bool nhwc) {
  DT_K_FOR(i, count) {
    const int ch = dt_k_channel(i, c, hw, nhwc);
    const float d = (mask && !mask[i]) ? 0.0f : dt_k_ld(dy, i);
    const float xhat = (dt_k_ld(x, i) - coef[3 * (size_t)c + ch]) * coef[4 * (size_t)c + ch];
    dt_k_st(dx, i, coef[ch] * (d - coef[(size_t)c + ch] - xhat * coef[2 * (size_t)c + ch]));
  }
}

static dim3 bn_reduce_grid(int n, int c, int hw) {
  return dim3((unsigned)((c + BN_TX - 1) / BN_TX), (unsigned)dt_k_bn_partial_rows(n, hw), 1);
}

extern "C" cudaError_t dt_k_bn_stats(const void *x, double *partial, int n, int c, int hw,
                                     bool nhwc, float eps, float momentum, float *save_mean,
                                     float *save_var, float *running_mean, float *running_var,
                                     float *mean_f, float *invstd_f, dt_cuda_dtype dt,
                                     cudaStream_t stream) {
  const dim3 grid = bn_reduce_grid(n, c, hw), block(BN_TX, BN_TY, 1);
  DT_K_TYPED(dt, T,
             k_bn_stats_partial<T><<<grid, block, 0, stream>>>((const T *)x, partial, n, c, hw,
                                                               nhwc));
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  k_bn_stats_final<<<bn_final_blocks(c), DT_K_BLOCK, 0, stream>>>(
      partial, (int)grid.y, c, (double)n * hw, eps, momentum, save_mean, save_var, running_mean,
      running_var, mean_f, invstd_f);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bn_apply(const void *x, void *y, uint8_t *mask, const float *mean,
                                     const float *invstd, const float *gamma, const float *beta,
                                     int n, int c, int hw, bool nhwc, bool relu, dt_cuda_dtype dt,
                                     cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_bn_apply<T>, count, (const T *)x, (T *)y, mask, mean, invstd, gamma,
                         beta, count, c, hw, nhwc, relu));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bn_infer(const void *x, void *y, const float *rmean,
                                     const float *rvar, const float *gamma, const float *beta,
                                     float eps, int n, int c, int hw, bool nhwc, bool relu,
                                     dt_cuda_dtype dt, cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_bn_infer<T>, count, (const T *)x, (T *)y, rmean, rvar, gamma, beta,
                         eps, count, c, hw, nhwc, relu));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bn_backward(const void *x, const void *dy, const uint8_t *mask,
                                        const float *save_mean, const float *save_var,
                                        const float *gamma, float eps, double *partial,
                                        float *coef, void *dx, float *dgamma, float *dbeta,
                                        int n, int c, int hw, bool nhwc, dt_cuda_dtype dt,
                                        cudaStream_t stream) {
  const dim3 grid = bn_reduce_grid(n, c, hw), block(BN_TX, BN_TY, 1);
  DT_K_TYPED(dt, T,
             k_bn_bwd_partial<T><<<grid, block, 0, stream>>>((const T *)x, (const T *)dy, mask,
                                                             save_mean, save_var, eps, partial,
                                                             n, c, hw, nhwc));
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  k_bn_bwd_final<<<bn_final_blocks(c), DT_K_BLOCK, 0, stream>>>(
      partial, (int)grid.y, c, (double)n * hw, save_mean, save_var, gamma, eps, dgamma, dbeta,
      coef);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const size_t count = (size_t)n * c * hw;
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_bn_bwd_dx<T>, count, (const T *)x, (const T *)dy, mask, coef, (T *)dx,
                         count, c, hw, nhwc));
  return cudaGetLastError();
}
