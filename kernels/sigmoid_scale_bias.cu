/* sigmoid_scale_bias.cu: kernels of the CUDA backend's squeeze-and-excitation gate (sigmoid,
 * channel scaling) and per-channel bias (src/cuda/cuda_sigmoid_scale_bias.c). Layouts, element
 * types, threads and determinism: common.cuh; the scale s (N, C) may have another element type
 * than x (an fp32 linear layer's output gating a 16-bit tensor). */
#include "common.cuh"

/* ---- sigmoid ---- */

template <typename T> __global__ static void k_sigmoid_forward(const T *x, T *y, size_t count) {
  DT_K_FOR(i, count) { dt_k_st(y, i, 1.0f / (1.0f + expf(-dt_k_ld(x, i)))); }
}

template <typename T>
__global__ static void k_sigmoid_backward(const T *y, const T *dy, T *dx, size_t count) {
  DT_K_FOR(i, count) {
    const float yi = dt_k_ld(y, i);
    dt_k_st(dx, i, dt_k_ld(dy, i) * yi * (1.0f - yi));
  }
}

/* ---- channel scaling: s and ds are (N, C), of their own element type S ---- */

template <typename T, typename S>
__global__ static void k_scale_forward(const T *x, const S *s, T *y, int n, int c, size_t hw,
                                       bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &p);
    dt_k_st(y, i, dt_k_ld(x, i) * dt_k_ld(s, img * (size_t)c + ch));
  }
}

// ds (N, C) = sum over hw of dy x, one thread per (n, c)
template <typename T, typename S>
__global__ static void k_scale_ds(const T *x, const T *dy, S *ds, int n, int c, size_t hw,
                                  bool nhwc) {
  DT_K_FOR(i, (size_t)n * c) {
    const size_t img = i / (size_t)c;
    const int ch = (int)(i % (size_t)c);
    double acc = 0;
    for (size_t p = 0; p < hw; p++) {
      const size_t o = dt_k_at4(img, ch, p, c, hw, nhwc);
      acc += (double)dt_k_ld(dy, o) * dt_k_ld(x, o);
    }
    dt_k_st(ds, i, (float)acc);
  }
}

/* ---- per-channel bias ---- */

template <typename T>
__global__ static void k_bias_forward(const T *x, const float *b, T *y, int n, int c, size_t hw,
                                      bool nhwc) {
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &p);
    dt_k_st(y, i, dt_k_ld(x, i) + b[ch]);
  }
}

// partial (N, C) = sum over hw of dy, one thread per (n, c)
template <typename T>
__global__ static void k_bias_partial(const T *dy, double *partial, int n, int c, size_t hw,
                                      bool nhwc) {
  DT_K_FOR(i, (size_t)n * c) {
    const size_t img = i / (size_t)c;
    const int ch = (int)(i % (size_t)c);
    double acc = 0;
    for (size_t p = 0; p < hw; p++) acc += dt_k_ld(dy, dt_k_at4(img, ch, p, c, hw, nhwc));
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

extern "C" cudaError_t dt_k_sigmoid_forward(const void *x, void *y, size_t count,
                                            dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T, DT_K_LAUNCH(k_sigmoid_forward<T>, count, (const T *)x, (T *)y, count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sigmoid_backward(const void *y, const void *dy, void *dx,
                                             size_t count, dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_sigmoid_backward<T>, count, (const T *)y, (const T *)dy, (T *)dx,
                         count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_scale_forward(const void *x, const void *s, void *y, int n, int c,
                                          size_t hw, bool nhwc, dt_cuda_dtype dt,
                                          dt_cuda_dtype st, cudaStream_t stream) {
  DT_K_TYPED2(dt, T, st, S,
              k_scale_forward<T, S><<<dt_k_blocks((size_t)n * c * hw), DT_K_BLOCK, 0, stream>>>(
                  (const T *)x, (const S *)s, (T *)y, n, c, hw, nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_scale_ds(const void *x, const void *dy, void *ds, int n, int c,
                                     size_t hw, bool nhwc, dt_cuda_dtype dt, dt_cuda_dtype st,
                                     cudaStream_t stream) {
  DT_K_TYPED2(dt, T, st, S,
              k_scale_ds<T, S><<<dt_k_blocks((size_t)n * c), DT_K_BLOCK, 0, stream>>>(
                  (const T *)x, (const T *)dy, (S *)ds, n, c, hw, nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_forward(const void *x, const float *b, void *y, int n, int c,
                                         size_t hw, bool nhwc, dt_cuda_dtype dt,
                                         cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_bias_forward<T>, (size_t)n * c * hw, (const T *)x, b, (T *)y, n, c, hw,
                         nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_backward(const void *dy, double *partial, float *db, int n,
                                          int c, size_t hw, bool nhwc, dt_cuda_dtype dt,
                                          cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_bias_partial<T>, (size_t)n * c, (const T *)dy, partial, n, c, hw, nhwc));
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  DT_K_LAUNCH(k_bias_final, (size_t)c, partial, db, n, c);
  return cudaGetLastError();
}
