/* eltwise.cu: elementwise kernels of the CUDA backend (ReLU, add, accumulate), global average
 * pooling and the linear layer's bias and bias gradient. Elementwise ops do not care about
 * the layout (all operands share it); pooling reads (N, hw, C) or (N, C, hw). Activations of
 * any element type (common.cuh); the bias rows are fp32. */
#include "common.cuh"

template <typename T> __global__ static void k_relu_forward(const T *x, T *y, size_t count) {
  DT_K_FOR(i, count) {
    const float v = dt_k_ld(x, i);
    dt_k_st(y, i, v > 0.0f ? v : 0.0f);
  }
}

template <typename T>
__global__ static void k_relu_backward(const T *y, const T *dy, T *dx, size_t count) {
  DT_K_FOR(i, count) { dt_k_st(dx, i, dt_k_ld(y, i) > 0.0f ? dt_k_ld(dy, i) : 0.0f); }
}

template <typename T> __global__ static void k_add(const T *a, const T *b, T *y, size_t count) {
  DT_K_FOR(i, count) { dt_k_st(y, i, dt_k_ld(a, i) + dt_k_ld(b, i)); }
}

template <typename T> __global__ static void k_accumulate(const T *src, T *dst, size_t count) {
  DT_K_FOR(i, count) { dt_k_st(dst, i, dt_k_ld(dst, i) + dt_k_ld(src, i)); }
}

// x (N, C, hw) in either order -> y (N, C); one thread per (n, c), summing in double.
template <typename T>
__global__ static void k_gap_forward(const T *x, T *y, int n, int c, int hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c) {
    const size_t img = i / (size_t)c;
    const int ch = (int)(i % (size_t)c);
    double s = 0;
    for (int p = 0; p < hw; p++) s += dt_k_ld(x, dt_k_at(img * (size_t)hw + p, ch, c, hw, nhwc));
    dt_k_st(y, i, (float)(s / hw));
  }
}

// dy (N, C) -> dx (N, C, hw) in either order.
template <typename T>
__global__ static void k_gap_backward(const T *dy, T *dx, int n, int c, int hw, bool nhwc) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    const size_t img = i / per;
    const int ch = dt_k_channel(i, c, hw, nhwc);
    dt_k_st(dx, i, dt_k_ld(dy, img * (size_t)c + ch) / (float)hw);
  }
}

// y (N, K) = b (K) on every row
__global__ static void k_bias_rows(const float *b, float *y, int n, int k) {
  DT_K_FOR(i, (size_t)n * k) { y[i] = b[i % (size_t)k]; }
}

// db (K) = sum over the N rows of dy (N, K)
__global__ static void k_sum_rows(const float *dy, float *db, int n, int k) {
  DT_K_FOR(j, (size_t)k) {
    double s = 0;
    for (int i = 0; i < n; i++) s += dy[(size_t)i * k + j];
    db[j] = (float)s;
  }
}

extern "C" cudaError_t dt_k_relu_forward(const void *x, void *y, size_t count, dt_cuda_dtype dt,
                                         cudaStream_t stream) {
  DT_K_TYPED(dt, T, DT_K_LAUNCH(k_relu_forward<T>, count, (const T *)x, (T *)y, count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_relu_backward(const void *y, const void *dy, void *dx, size_t count,
                                          dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_relu_backward<T>, count, (const T *)y, (const T *)dy, (T *)dx, count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_add(const void *a, const void *b, void *y, size_t count,
                                dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T, DT_K_LAUNCH(k_add<T>, count, (const T *)a, (const T *)b, (T *)y, count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_accumulate(const void *src, void *dst, size_t count, dt_cuda_dtype dt,
                                       cudaStream_t stream) {
  DT_K_TYPED(dt, T, DT_K_LAUNCH(k_accumulate<T>, count, (const T *)src, (T *)dst, count));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_gap_forward(const void *x, void *y, int n, int c, int hw, bool nhwc,
                                        dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_gap_forward<T>, (size_t)n * c, (const T *)x, (T *)y, n, c, hw, nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_gap_backward(const void *dy, void *dx, int n, int c, int hw,
                                         bool nhwc, dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_gap_backward<T>, (size_t)n * c * hw, (const T *)dy, (T *)dx, n, c, hw,
                         nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_bias_rows(const float *b, float *y, int n, int k, cudaStream_t stream) {
  k_bias_rows<<<dt_k_blocks((size_t)n * k), DT_K_BLOCK, 0, stream>>>(b, y, n, k);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_sum_rows(const float *dy, float *db, int n, int k,
                                     cudaStream_t stream) {
  k_sum_rows<<<dt_k_blocks((size_t)k), DT_K_BLOCK, 0, stream>>>(dy, db, n, k);
  return cudaGetLastError();
}
