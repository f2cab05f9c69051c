/* concat_pad_shift.cu: kernels of the CUDA backend's ops that only move values
 * (src/cuda/cuda_concat_pad_shift.c): channel copies (concatenation, channel padding) and the
 * spatial shift. Layouts, threads and determinism: common.cuh. */
#include "common.cuh"

/* ---- channel copies ---- */

// dst channels [d0, d0 + nc) of (N, dc, hw) = src channels [s0, s0 + nc) of (N, sc, hw), or 0
// where src is NULL
__global__ static void k_copy_channels(const float *src, int sc, int s0, bool s_nhwc, float *dst,
                                       int dc, int d0, bool d_nhwc, int n, int nc, size_t hw) {
  DT_K_FOR(i, (size_t)n * nc * hw) {
    size_t img, p;
    int c;
    dt_k_coords(i, nc, hw, d_nhwc, &img, &c, &p); /* in the order of dst, for coalesced writes */
    const float v = src ? src[dt_k_at4(img, s0 + c, p, sc, hw, s_nhwc)] : 0.0f;
    dst[dt_k_at4(img, d0 + c, p, dc, hw, d_nhwc)] = v;
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
    dt_k_coords(i, c, hw, nhwc, &img, &ch, &p);
    const int si = (int)(p / (size_t)w) + sy, sj = (int)(p % (size_t)w) + sx;
    y[i] = (si >= 0 && si < h && sj >= 0 && sj < w)
               ? x[dt_k_at4(img, ch, (size_t)si * w + sj, c, hw, nhwc)]
               : 0.0f;
  }
}

/* ---- launchers ---- */

extern "C" cudaError_t dt_k_copy_channels(const float *src, int sc, int s0, bool s_nhwc,
                                          float *dst, int dc, int d0, bool d_nhwc, int n, int nc,
                                          size_t hw, cudaStream_t stream) {
  if (nc <= 0) return cudaSuccess;
  DT_K_LAUNCH(k_copy_channels, (size_t)n * nc * hw, src, sc, s0, s_nhwc, dst, dc, d0, d_nhwc, n, nc,
         hw);
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_shift(const float *x, float *y, int n, int c, int h, int w, int sy,
                                  int sx, bool nhwc, cudaStream_t stream) {
  DT_K_LAUNCH(k_shift, (size_t)n * c * h * w, x, y, n, c, h, w, sy, sx, nhwc);
  return cudaGetLastError();
}
