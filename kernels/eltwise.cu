/* eltwise.cu: elementwise kernels of the CUDA backend (ReLU, add, accumulate), global average
 * pooling and the linear layer's bias and bias gradient. Elementwise ops do not care about
 * the layout (all operands share it); pooling reads (N, hw, C) or (N, C, hw). */
#include "common.cuh"

__global__ static void k_relu_forward(const float *x, float *y, size_t count) {
  DT_K_FOR(i, count) { y[i] = x[i] > 0.0f ? x[i] : 0.0f; }
}

__global__ static void k_relu_backward(const float *y, const float *dy, float *dx, size_t count) {
  DT_K_FOR(i, count) { dx[i] = y[i] > 0.0f ? dy[i] : 0.0f; }
}

__global__ static void k_add(const float *a, const float *b, float *y, size_t count) {
  DT_K_FOR(i, count) { y[i] = a[i] + b[i]; }
}

__global__ static void k_accumulate(const float *src, float *dst, size_t count) {
  DT_K_FOR(i, count) { dst[i] += src[i]; }
}

// x (N, C, hw) in either order -> y (N, C); one thread per (n, c), summing in double.
__global__ static void k_gap_forward(const float *x, float *y, int n, int c, int hw, bool nhwc) {
  DT_K_FOR(i, (size_t)n * c) {
    const size_t img = i / (size_t)c;
    const int ch = (int)(i % (size_t)c);
    double s = 0;
    for (int p = 0; p < hw; p++) s += x[dt_k_at(img * (size_t)hw + p, ch, c, hw, nhwc)];
    y[i] = (float)(s / hw);
  }
}

// dy (N, C) -> dx (N, C, hw) in either order.
__global__ static void k_gap_backward(const float *dy, float *dx, int n, int c, int hw, bool nhwc) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    const size_t img = i / per;
    const int ch = dt_k_channel(i, c, hw, nhwc);
    dx[i] = dy[img * (size_t)c + ch] / (float)hw;
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

extern "C" cudaError_t dt_k_relu_forward(const float *x, float *y, size_t count,
                                         cudaStream_t stream) {
  k_relu_forward<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(x, y, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_relu_backward(const float *y, const float *dy, float *dx, size_t count,
                                          cudaStream_t stream) {
  k_relu_backward<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(y, dy, dx, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_add(const float *a, const float *b, float *y, size_t count,
                                cudaStream_t stream) {
  k_add<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(a, b, y, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_accumulate(const float *src, float *dst, size_t count,
                                       cudaStream_t stream) {
  k_accumulate<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(src, dst, count);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_gap_forward(const float *x, float *y, int n, int c, int hw, bool nhwc,
                                        cudaStream_t stream) {
  k_gap_forward<<<dt_k_blocks((size_t)n * c), DT_K_BLOCK, 0, stream>>>(x, y, n, c, hw, nhwc);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_gap_backward(const float *dy, float *dx, int n, int c, int hw,
                                         bool nhwc, cudaStream_t stream) {
  k_gap_backward<<<dt_k_blocks((size_t)n * c * hw), DT_K_BLOCK, 0, stream>>>(dy, dx, n, c, hw,
                                                                           nhwc);
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
