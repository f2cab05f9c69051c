/* pool.cu: kernels of the CUDA backend's max and average pooling (src/cuda/cuda_pool.c).
 * Layouts, element types, threads and determinism: common.cuh. */
#include "common.cuh"

/* ---- pooling ---- */

// y (N, C, P, Q) from x (N, C, H, W); max pooling records in ws the argmax h W + w
template <typename T>
__global__ static void k_pool_forward(const T *x, T *y, int *ws, int n, int c, int h,
                                      int w, int P, int Q, int k, int stride, int pad,
                                      bool is_max, bool incl, bool x_nhwc, bool y_nhwc) {
  const size_t hw = (size_t)h * w, pq = (size_t)P * Q;
  DT_K_FOR(i, (size_t)n * c * pq) {
    size_t img, o;
    int ch;
    dt_k_coords(i, c, pq, y_nhwc, &img, &ch, &o);
    const int oh = (int)(o / (size_t)Q), ow = (int)(o % (size_t)Q);
    float best = 0.0f, sum = 0.0f;
    int arg = -1, count = 0;
    for (int kr = 0; kr < k; kr++) {
      const int ih = oh * stride - pad + kr;
      if (ih < 0 || ih >= h) continue;
      for (int ks = 0; ks < k; ks++) {
        const int iw = ow * stride - pad + ks;
        if (iw < 0 || iw >= w) continue;
        const float v = dt_k_ld(x, dt_k_at4(img, ch, (size_t)ih * w + iw, c, hw, x_nhwc));
        if (count == 0 || v > best) best = v, arg = ih * w + iw;
        sum += v;
        count++;
      }
    }
    if (is_max) {
      dt_k_st(y, i, best);
      ws[i] = arg;
    } else {
      dt_k_st(y, i, sum / (incl ? (float)(k * k) : (float)count));
    }
  }
}

// dx (N, C, H, W): for each input, the dy of the outputs whose window holds it (max: whose
// maximum it was), in output order
template <typename T>
__global__ static void k_pool_backward(const T *dy, const int *ws, T *dx, int n, int c,
                                       int h, int w, int P, int Q, int k, int stride, int pad,
                                       bool is_max, bool incl, bool x_nhwc, bool y_nhwc) {
  const size_t hw = (size_t)h * w, pq = (size_t)P * Q;
  DT_K_FOR(i, (size_t)n * c * hw) {
    size_t img, o;
    int ch;
    dt_k_coords(i, c, hw, x_nhwc, &img, &ch, &o);
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
        const size_t yo = dt_k_at4(img, ch, (size_t)p * Q + q, c, pq, y_nhwc);
        if (is_max) {
          if (ws[yo] == (int)o) acc += dt_k_ld(dy, yo);
          continue;
        }
        float div = (float)(k * k);
        if (!incl) {
          const int r0 = max(p * stride - pad, 0), r1 = min(p * stride - pad + k, h);
          const int s0 = max(q * stride - pad, 0), s1 = min(q * stride - pad + k, w);
          div = (float)((r1 - r0) * (s1 - s0));
        }
        acc += dt_k_ld(dy, yo) / div;
      }
    dt_k_st(dx, i, acc);
  }
}

/* ---- launchers ---- */

extern "C" cudaError_t dt_k_pool_forward(const void *x, void *y, int *ws, int n, int c, int h,
                                         int w, int P, int Q, int k, int stride, int pad,
                                         bool max, bool incl, bool x_nhwc, bool y_nhwc,
                                         dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_pool_forward<T>, (size_t)n * c * P * Q, (const T *)x, (T *)y, ws, n, c,
                         h, w, P, Q, k, stride, pad, max, incl, x_nhwc, y_nhwc));
  return cudaGetLastError();
}

extern "C" cudaError_t dt_k_pool_backward(const void *dy, const int *ws, void *dx, int n, int c,
                                          int h, int w, int P, int Q, int k, int stride, int pad,
                                          bool max, bool incl, bool x_nhwc, bool y_nhwc,
                                          dt_cuda_dtype dt, cudaStream_t stream) {
  DT_K_TYPED(dt, T,
             DT_K_LAUNCH(k_pool_backward<T>, (size_t)n * c * h * w, (const T *)dy, ws, (T *)dx, n,
                         c, h, w, P, Q, k, stride, pad, max, incl, x_nhwc, y_nhwc));
  return cudaGetLastError();
}
