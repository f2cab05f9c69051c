/* layout.cu: storage-order conversions of the CUDA backend: NCHW <-> NHWC for the image batch,
 * downloads and NCHW-input convolutions; and the conversions between element types (fp32,
 * bfloat16, half; round to nearest even), which may transpose on the way: uploads and
 * downloads of 16-bit tensors, the fp32 image batch into a 16-bit convolution, and the 16-bit
 * copies of the (KRSC) weights and their gradients. One thread per element of the destination. */
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

// dst (N, C, hw) = src (N, C, hw), or dst += src, each stored NCHW or NHWC, from element type S
// to D (common.cuh: load to float, store rounded)
template <typename S, typename D>
__global__ static void k_convert(const S *src, bool src_nchw, D *dst, bool dst_nchw, int n, int c,
                                 int hw, bool accumulate) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    size_t from = i;
    if (src_nchw != dst_nchw) {
      const size_t img = i / per, rem = i % per;
      from = dst_nchw ? img * per + (rem % (size_t)hw) * (size_t)c + rem / (size_t)hw  // NHWC src
                      : img * per + (rem % (size_t)c) * (size_t)hw + rem / (size_t)c;  // NCHW src
    }
    const float v = dt_k_ld(src, from);
    dt_k_st(dst, i, accumulate ? dt_k_ld(dst, i) + v : v);
  }
}

extern "C" cudaError_t dt_k_convert(const void *src, dt_cuda_dtype st, bool src_nchw, void *dst,
                                    dt_cuda_dtype dt, bool dst_nchw, int n, int c, int hw,
                                    bool accumulate, cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  DT_K_TYPED2(st, S, dt, D,
              k_convert<S, D><<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(
                  (const S *)src, src_nchw, (D *)dst, dst_nchw, n, c, hw, accumulate));
  return cudaGetLastError();
}
