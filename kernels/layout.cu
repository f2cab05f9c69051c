/* layout.cu: storage-order conversions of the CUDA backend: NCHW <-> NHWC for the image batch,
 * downloads and NCHW-input convolutions, and OIHW <-> OHWI (KRSC) for convolution weights,
 * which is the same transposition with N = K, C = C/G, hw = R S; and the fp32 <-> bfloat16 /
 * half conversions of the bf16 and fp16 convolutions (round to nearest even), which may
 * transpose on the way. One thread per element of the destination. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// One value to the 16-bit format and back: bfloat16, or IEEE half (beyond 65504 -> +-inf).
template <typename H> __device__ static inline H to_half(float v);
template <> __device__ inline __nv_bfloat16 to_half<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ inline __half to_half<__half>(float v) { return __float2half_rn(v); }
__device__ static inline float from_half(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ static inline float from_half(__half v) { return __half2float(v); }

// src (N, C, hw) fp32, NCHW or already NHWC -> dst (N, hw, C) 16-bit
template <typename H>
__global__ static void k_to_half(const float *src, H *dst, int n, int c, int hw, bool src_nchw) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    size_t from = i;
    if (src_nchw) {
      const size_t img = i / per, rem = i % per;
      from = img * per + (rem % (size_t)c) * (size_t)hw + rem / (size_t)c;
    }
    dst[i] = to_half<H>(src[from]);
  }
}

// src (N, hw, C) 16-bit -> dst (N, C, hw) or (N, hw, C) fp32, added to dst when accumulate
template <typename H>
__global__ static void k_from_half(const H *src, float *dst, int n, int c, int hw, bool dst_nchw,
                                   bool accumulate) {
  const size_t per = (size_t)c * hw;
  DT_K_FOR(i, (size_t)n * per) {
    size_t from = i;
    if (dst_nchw) {
      const size_t img = i / per, rem = i % per;
      from = img * per + (rem % (size_t)hw) * (size_t)c + rem / (size_t)hw;
    }
    const float v = from_half(src[from]);
    dst[i] = accumulate ? dst[i] + v : v;
  }
}

extern "C" cudaError_t dt_k_to_half(const float *src, void *dst, int n, int c, int hw,
                                    bool src_nchw, bool fp16, cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  if (fp16)
    k_to_half<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(src, (__half *)dst, n, c, hw,
                                                             src_nchw);
  else
    k_to_half<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>(src, (__nv_bfloat16 *)dst, n, c,
                                                             hw, src_nchw);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_from_half(const void *src, float *dst, int n, int c, int hw,
                                      bool dst_nchw, bool accumulate, bool fp16,
                                      cudaStream_t stream) {
  const size_t count = (size_t)n * c * hw;
  if (fp16)
    k_from_half<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>((const __half *)src, dst, n, c,
                                                               hw, dst_nchw, accumulate);
  else
    k_from_half<<<dt_k_blocks(count), DT_K_BLOCK, 0, stream>>>((const __nv_bfloat16 *)src, dst,
                                                               n, c, hw, dst_nchw, accumulate);
  return cudaGetLastError();
}
