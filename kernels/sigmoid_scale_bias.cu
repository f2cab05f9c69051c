/* sigmoid_scale_bias.cu: kernels of the CUDA backend's squeeze-and-excitation gate (sigmoid,
 * channel scaling) and per-channel bias (src/cuda/cuda_sigmoid_scale_bias.c). Layouts, threads
 * and determinism: common.cuh. */
#include "common.cuh"

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
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &p);
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
      const size_t o = dt_k_at4(img, ch, p, c, hw, nhwc);
      acc += (double)dy[o] * x[o];
    }
    ds[i] = (float)acc;
  }
}

/* ---- per-channel bias ---- */

__global__ static void k_bias_forward(const float *x, const float *b, float *y, int n, int c,
                                      size_t hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &p);
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
    for (size_t p = 0; p < hw; p++) acc += dy[dt_k_at4(img, ch, p, c, hw, nhwc)];
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

extern "C" cudaError_t dt_k_sigmoid_forward(const float *x, float *y, size_t count,
                                            cudaStream_t stream) {
  DT_K_LAUNCH(k_sigmoid_forward, count, x, y, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sigmoid_backward(const float *y, const float *dy, float *dx,
                                             size_t count, cudaStream_t stream) {
  DT_K_LAUNCH(k_sigmoid_backward, count, y, dy, dx, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_scale_forward(const float *x, const float *s, float *y, int n, int c,
                                          size_t hw, bool nhwc, cudaStream_t stream) {
  DT_K_LAUNCH(k_scale_forward, (size_t)n * c * hw, x, s, y, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_scale_ds(const float *x, const float *dy, float *ds, int n, int c,
                                     size_t hw, bool nhwc, cudaStream_t stream) {
  DT_K_LAUNCH(k_scale_ds, (size_t)n * c, x, dy, ds, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_forward(const float *x, const float *b, float *y, int n, int c,
                                         size_t hw, bool nhwc, cudaStream_t stream) {
  DT_K_LAUNCH(k_bias_forward, (size_t)n * c * hw, x, b, y, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_backward(const float *dy, double *partial, float *db, int n,
                                          int c, size_t hw, bool nhwc, cudaStream_t stream) {
  DT_K_LAUNCH(k_bias_partial, (size_t)n * c, dy, partial, n, c, hw, nhwc);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  DT_K_LAUNCH(k_bias_final, (size_t)c, partial, db, n, c);
  return cudaGetLastError();
}
