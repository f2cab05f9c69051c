/* concat_pad_shift.cu: kernels of the CUDA backend's ops that only move values
 * (src/cuda/cuda_concat_pad_shift.c): channel copies (concatenation, channel padding) and the
 * spatial shift. Layouts, element types, threads and determinism: common.cuh; a channel copy
 * may change the element type (the fp32 plain input concatenated into a 16-bit tensor). */
#include "common.cuh"

/* ---- channel copies ---- */

// dst channels [d0, d0 + nc) of (N, dc, hw) = src channels [s0, s0 + nc) of (N, sc, hw), or 0
// where src is NULL
template <typename S, typename D>
__global__ static void k_copy_channels(const S *src, int sc, int s0, bool s_nhwc, D *dst,
                                       int dc, int d0, bool d_nhwc, int n, int nc, size_t hw) {
  DT_K_FOR(i, (size_t)n * nc * hw) {
    size_t img, p;
    int c;
    dt_k_coords(i, nc, hw, d_nhwc, &img, &c, &p); /* in the order of dst, for coalesced writes */
    const float v = src ? dt_k_ld(src, dt_k_at4(img, s0 + c, p, sc, hw, s_nhwc)) : 0.0f;
    dt_k_st(dst, dt_k_at4(img, d0 + c, p, dc, hw, d_nhwc), v);
  }
}

/* ---- spatial shift ---- */

// y[:, :, i, j] = x[:, :, i + sy, j + sx], 0 outside
template <typename T>
__global__ static void k_shift(const T *x, T *y, int n, int c, int h, int w, int sy,
                               int sx, bool nhwc) {
  const size_t hw = (size_t)h * w;
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, p;
    int ch;
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &p);
    const int si = (int)(p / (size_t)w) + sy, sj = (int)(p % (size_t)w) + sx;
    dt_k_st(y, i, (si >= 0 && si < h && sj >= 0 && sj < w)
                      ? dt_k_ld(x, dt_k_at4(img, ch, (size_t)si * w + sj, c, hw, nhwc))
                      : 0.0f);
  }
}

/* ---- launchers ---- */

extern "C" cudaError_t dt_k_copy_channels(const void *src, dt_cuda_dtype st, int sc, int s0,
                                          bool s_nhwc, void *dst, dt_cuda_dtype dt, int dc, int d0,
                                          bool d_nhwc, int n, int nc, size_t hw,
                                          cudaStream_t stream) {
  if (nc <= 0) return cudaSuccess;
  DT_K_TYPED2(st, S, dt, D,
              k_copy_channels<S, D><<<dt_k_blocks((size_t)n * nc * hw), DT_K_BLOCK, 0, stream>>>(
                  (const S *)src, sc, s0, s_nhwc, (D *)dst, dc, d0, d_nhwc, n, nc, hw));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shift(const void *x, void *y, int n, int c, int h, int w, int sy,
                                  int sx, bool nhwc, dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_shift<T>, (size_t)n * c * h * w, (const T *)x, (T *)y, n, c, h, w, sy,
                         sx, nhwc));
  return cudaGetLastError();
}
