/* layout.cu: storage-order conversions of the CUDA backend: NCHW <-> NHWC for the image batch,
 * downloads and NCHW-input convolutions, and OIHW <-> OHWI (KRSC) for convolution weights,
 * which is the same transposition with N = K, C = C/G, hw = R S. One thread per element of
 * the destination; these run on small tensors (images, weights), so plainness wins. */
#include "common.cuh"

// src (N, C, hw) -> dst (N, hw, C)
__global__ static void k_nchw_to_nhwc(const float *src, float *dst, int n, int c, int hw) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    const size_t img = i / per, rem = i % per;
    const size_t p = rem / (size_t)c, ch = rem % (size_t)c;
    dst[i] = src[img * per + ch * (size_t)hw + p];
  }
}

// src (N, hw, C) -> dst (N, C, hw)
__global__ static void k_nhwc_to_nchw(const float *src, float *dst, int n, int c, int hw) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    const size_t img = i / per, rem = i % per;
    const size_t ch = rem / (size_t)hw, p = rem % (size_t)hw;
    dst[i] = src[img * per + p * (size_t)c + ch];
  }
}

extern "C" cudaError_t dt_k_nchw_to_nhwc(const float *src, float *dst, int n, int c, int hw,
                                         cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  k_nchw_to_nhwc<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(src, dst, n, c, hw);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_nhwc_to_nchw(const float *src, float *dst, int n, int c, int hw,
                                         cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  k_nhwc_to_nchw<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(src, dst, n, c, hw);
  return cudaGetLastError();
}
