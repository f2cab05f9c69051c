/* extra.cu: kernels of the CUDA backend's ops of the other families (backend.h): pooling,
 * channel copies (concatenation, channel padding), dropout, sigmoid, channel scaling,
 * shake-shake mixing, spatial shift and the per-channel bias.
 *
 * Tensors are (N, C, H, W) stored as NCHW or NHWC (`nhwc` flags, one per operand where the
 * shapes differ). One thread per element of the output, which it computes whole: backward
 * passes that fan in (pooling) gather over the outputs that read an input instead of
 * scattering with atomics, and reductions (bias and scale gradients) run one thread per
 * (n, c) over H W in double, then over N in a fixed order, so every result is deterministic. */
#include "common.cuh"

/* Offset of (n, c, p) in an (N, C, hw) tensor, p = h W + w. */
__device__ static inline size_t at4(size_t n, int c, size_t p, int C, size_t hw, bool nhwc) {
  return nhwc ? (n * hw + p) * (size_t)C + (size_t)c : (n * (size_t)C + (size_t)c) * hw + p;
}

/* The (n, c, p) of storage offset i. */
__device__ static inline void coords(size_t i, int C, size_t hw, bool nhwc, size_t *n, int *c,
                                     size_t *p) {
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

/* ---- pooling ---- */

// y (N, C, P, Q) from x (N, C, H, W); max pooling records in ws the argmax h W + w
__global__ static void k_pool_forward(const float *x, float *y, int *ws, int n, int c, int h,
                                      int w, int P, int Q, int k, int stride, int pad,
                                      bool is_max, bool incl, bool x_nhwc, bool y_nhwc) {
  const size_t hw = (size_t)h * w, pq = (size_t)P * Q;
  DT_K_FOR(i, (size_t)n * c * pq) {
    size_t img, o;
    int ch;
    coords(i, c, pq, y_nhwc, &img, &ch, &o);
    const int oh = (int)(o / (size_t)Q), ow = (int)(o % (size_t)Q);
    float best = 0.0f, sum = 0.0f;
    int arg = -1, count = 0;
    for (int kr = 0; kr < k; kr++) {
      const int ih = oh * stride - pad + kr;
      if (ih < 0 || ih >= h) continue;
      for (int ks = 0; ks < k; ks++) {
        const int iw = ow * stride - pad + ks;
        if (iw < 0 || iw >= w) continue;
        const float v = x[at4(img, ch, (size_t)ih * w + iw, c, hw, x_nhwc)];
        if (count == 0 || v > best) best = v, arg = ih * w + iw;
        sum += v;
        count++;
      }
    }
    if (is_max) {
      y[i] = best;
      ws[i] = arg;
    } else {
      y[i] = sum / (incl ? (float)(k * k) : (float)count);
    }
  }
}

// dx (N, C, H, W): for each input, the dy of the outputs whose window holds it (max: whose
// maximum it was), in output order
__global__ static void k_pool_backward(const float *dy, const int *ws, float *dx, int n, int c,
                                       int h, int w, int P, int Q, int k, int stride, int pad,
                                       bool is_max, bool incl, bool x_nhwc, bool y_nhwc) {
  const size_t hw = (size_t)h * w, pq = (size_t)P * Q;
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, o;
    int ch;
    coords(i, c, hw, x_nhwc, &img, &ch, &o);
    const int ih = (int)(o / (size_t)w), iw = (int)(o % (size_t)w);
    const int hp = ih + pad, wp = iw + pad;
    /* outputs p with p stride - pad <= ih <= p stride - pad + k - 1 */
    const int p0 = hp - k + 1 <= 0 ? 0 : (hp - k + stride) / stride;
    const int p1 = min(hp / stride, P - 1);
    const int q0 = wp - k + 1 <= 0 ? 0 : (wp - k + stride) / stride;
    const int q1 = min(wp / stride, Q - 1);
    float acc = 0.0f;
    for (int p = p0; p <= p1; p++)
      for (int q = q0; q <= q1; q++) {
        const size_t yo = at4(img, ch, (size_t)p * Q + q, c, pq, y_nhwc);
        if (is_max) {
          if (ws[yo] == (int)o) acc += dy[yo];
          continue;
        }
        float div = (float)(k * k);
        if (!incl) {
          const int r0 = max(p * stride - pad, 0), r1 = min(p * stride - pad + k, h);
          const int s0 = max(q * stride - pad, 0), s1 = min(q * stride - pad + k, w);
          div = (float)((r1 - r0) * (s1 - s0));
        }
        acc += dy[yo] / div;
      }
    dx[i] = acc;
  }
}

/* ---- channel copies ---- */

// dst channels [d0, d0 + nc) of (N, dc, hw) = src channels [s0, s0 + nc) of (N, sc, hw), or 0
// where src is NULL
__global__ static void k_copy_channels(const float *src, int sc, int s0, bool s_nhwc, float *dst,
                                       int dc, int d0, bool d_nhwc, int n, int nc, size_t hw) {
  DT_K_FOR(i, (size_t)n * nc * hw) {
    size_t img, p;
    int c;
    coords(i, nc, hw, d_nhwc, &img, &c, &p); /* in the order of dst, for coalesced writes */
    const float v = src ? src[at4(img, s0 + c, p, sc, hw, s_nhwc)] : 0.0f;
    dst[at4(img, d0 + c, p, dc, hw, d_nhwc)] = v;
  }
}

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
    coords(i, c, hw, nhwc, &img, &ch, &pix);
    const bool keep = dropout_uniform(keys[img], (uint64_t)ch * hw + pix) >= p;
    mask[i] = keep;
    y[i] = x[i] * (keep ? scale : 0.0f);
  }
}

__global__ static void k_dropout_backward(const float *dy, const uint8_t *mask, float *dx,
                                          float scale, size_t count) {
  DT_K_FOR(i, count) { dx[i] = dy[i] * (mask[i] ? scale : 0.0f); }
}

/* ---- sigmoid ---- */

__global__ static void k_sigmoid_forward(const float *x, float *y, size_t count) {
  DT_K_FOR(i, count) { y[i] = 1.0f / (1.0f + expf(-x[i])); }
}

__global__ static void k_sigmoid_backward(const float *y, const float *dy, float *dx,
                                          size_t count) {
  DT_K_FOR(i, count) { dx[i] = dy[i] * y[i] * (1.0f - y[i]); }
}

/* ---- channel scaling: s and ds are (N, C) ---- */

__global__ static void k_scale_forward(const float *x, const float *s, float *y, int n, int c,
                                       size_t hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    coords(i, c, hw, nhwc, &img, &ch, &p);
    y[i] = x[i] * s[img * (size_t)c + ch];
  }
}

// ds (N, C) = sum over hw of dy x, one thread per (n, c)
__global__ static void k_scale_ds(const float *x, const float *dy, float *ds, int n, int c,
                                  size_t hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c) {
    const size_t img = i / (size_t)c;
    const int ch = (int)(i % (size_t)c);
    double acc = 0;
    for (size_t p = 0; p < hw; p++) {
      const size_t o = at4(img, ch, p, c, hw, nhwc);
      acc += (double)dy[o] * x[o];
    }
    ds[i] = (float)acc;
  }
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

/* ---- spatial shift ---- */

// y[:, :, i, j] = x[:, :, i + sy, j + sx], 0 outside
__global__ static void k_shift(const float *x, float *y, int n, int c, int h, int w, int sy,
                               int sx, bool nhwc) {
  const size_t hw = (size_t)h * w;
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    coords(i, c, hw, nhwc, &img, &ch, &p);
    const int si = (int)(p / (size_t)w) + sy, sj = (int)(p % (size_t)w) + sx;
    y[i] = (si >= 0 && si < h && sj >= 0 && sj < w)
               ? x[at4(img, ch, (size_t)si * w + sj, c, hw, nhwc)]
               : 0.0f;
  }
}

/* ---- per-channel bias ---- */

__global__ static void k_bias_forward(const float *x, const float *b, float *y, int n, int c,
                                      size_t hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    coords(i, c, hw, nhwc, &img, &ch, &p);
    y[i] = x[i] + b[ch];
  }
}

// partial (N, C) = sum over hw of dy, one thread per (n, c)
__global__ static void k_bias_partial(const float *dy, double *partial, int n, int c, size_t hw,
                                      bool nhwc) {
  DT_K_FOR(i, (size_t)n * c) {
    const size_t img = i / (size_t)c;
    const int ch = (int)(i % (size_t)c);
    double acc = 0;
    for (size_t p = 0; p < hw; p++) acc += dy[at4(img, ch, p, c, hw, nhwc)];
    partial[i] = acc;
  }
}

// db (C) = sum over n of partial (N, C)
__global__ static void k_bias_final(const double *partial, float *db, int n, int c) {
  DT_K_FOR(ch, (size_t)c) {
    double acc = 0;
    for (int i = 0; i < n; i++) acc += partial[(size_t)i * c + ch];
    db[ch] = (float)acc;
  }
}

/* ---- launchers ---- */

#define LAUNCH(kernel, count, ...)                                              \
  do {                                                                          \
    kernel<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(__VA_ARGS__);         \
  } while (0)

extern "C" cudaError_t dt_k_pool_forward(const float *x, float *y, int *ws, int n, int c, int h,
                                         int w, int P, int Q, int k, int stride, int pad,
                                         bool max, bool incl, bool x_nhwc, bool y_nhwc,
                                         cudaStream_t stream) {
  LAUNCH(k_pool_forward, (size_t)n * c * P * Q, x, y, ws, n, c, h, w, P, Q, k, stride, pad, max,
         incl, x_nhwc, y_nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_pool_backward(const float *dy, const int *ws, float *dx, int n, int c,
                                          int h, int w, int P, int Q, int k, int stride, int pad,
                                          bool max, bool incl, bool x_nhwc, bool y_nhwc,
                                          cudaStream_t stream) {
  LAUNCH(k_pool_backward, (size_t)n * c * h * w, dy, ws, dx, n, c, h, w, P, Q, k, stride, pad,
         max, incl, x_nhwc, y_nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_copy_channels(const float *src, int sc, int s0, bool s_nhwc,
                                          float *dst, int dc, int d0, bool d_nhwc, int n, int nc,
                                          size_t hw, cudaStream_t stream) {
  if (nc <= 0) return cudaSuccess;
  LAUNCH(k_copy_channels, (size_t)n * nc * hw, src, sc, s0, s_nhwc, dst, dc, d0, d_nhwc, n, nc,
         hw);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_dropout_forward(const float *x, float *y, uint8_t *mask,
                                            const uint64_t *keys, float p, float scale, int n,
                                            int c, size_t hw, bool nhwc, cudaStream_t stream) {
  LAUNCH(k_dropout_forward, (size_t)n * c * hw, x, y, mask, keys, p, scale, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_dropout_backward(const float *dy, const uint8_t *mask, float *dx,
                                             float scale, size_t count, cudaStream_t stream) {
  LAUNCH(k_dropout_backward, count, dy, mask, dx, scale, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sigmoid_forward(const float *x, float *y, size_t count,
                                            cudaStream_t stream) {
  LAUNCH(k_sigmoid_forward, count, x, y, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sigmoid_backward(const float *y, const float *dy, float *dx,
                                             size_t count, cudaStream_t stream) {
  LAUNCH(k_sigmoid_backward, count, y, dy, dx, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_scale_forward(const float *x, const float *s, float *y, int n, int c,
                                          size_t hw, bool nhwc, cudaStream_t stream) {
  LAUNCH(k_scale_forward, (size_t)n * c * hw, x, s, y, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_scale_ds(const float *x, const float *dy, float *ds, int n, int c,
                                     size_t hw, bool nhwc, cudaStream_t stream) {
  LAUNCH(k_scale_ds, (size_t)n * c, x, dy, ds, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shake_forward(const float *a, const float *b, const float *alpha,
                                          float *y, size_t per, size_t count,
                                          cudaStream_t stream) {
  LAUNCH(k_shake_forward, count, a, b, alpha, y, per, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shake_backward(const float *dy, const float *beta, float *da,
                                           float *db, size_t per, size_t count,
                                           cudaStream_t stream) {
  LAUNCH(k_shake_backward, count, dy, beta, da, db, per, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shift(const float *x, float *y, int n, int c, int h, int w, int sy,
                                  int sx, bool nhwc, cudaStream_t stream) {
  LAUNCH(k_shift, (size_t)n * c * h * w, x, y, n, c, h, w, sy, sx, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_forward(const float *x, const float *b, float *y, int n, int c,
                                         size_t hw, bool nhwc, cudaStream_t stream) {
  LAUNCH(k_bias_forward, (size_t)n * c * hw, x, b, y, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_backward(const float *dy, double *partial, float *db, int n,
                                          int c, size_t hw, bool nhwc, cudaStream_t stream) {
  LAUNCH(k_bias_partial, (size_t)n * c, dy, partial, n, c, hw, nhwc);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  LAUNCH(k_bias_final, (size_t)c, partial, db, n, c);
  return cudaGetLastError();
}
