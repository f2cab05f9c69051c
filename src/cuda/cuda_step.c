/* cuda_step.c: the CUDA backend's ops for a training step's device-side bookkeeping
 * (backend.h), by the kernels of kernels/step.cu and the non-finite check of kernels/optim.cu.
 * None waits for the stream: the step reads their results back in one to_host. hold_host
 * lets the step's uploads go ahead without waiting too. */
#include "cuda/cuda_internal.h"
#include "cuda/cuda_step_kernels.h"

void dt_cuda_copy(dt_backend *bep, void *dst, const void *src, size_t bytes) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (bytes == 0) return;
  DT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, be->stream));
  dt_cuda_op_done(be, false);
}

void dt_cuda_axpy(dt_backend *bep, float *y, const float *x, const float *x2, size_t n,
                  float a) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  DT_CUDA_CHECK(dt_k_axpy(y, x, x2, n, a, be->stream));
  dt_cuda_op_done(be, false);
}

void dt_cuda_flag_nonfinite(dt_backend *bep, const float *x, size_t n, int32_t *flag) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (n == 0) return;
  DT_CUDA_CHECK(dt_k_nonfinite(x, n, (int *)flag, be->stream));
  dt_cuda_op_done(be, false);
}

/* Fatal unless t is a plain (N, K) matrix. */
static void check_plain(dt_cuda_backend *be, const dt_tensor *t, int n, int k, const char *what) {
  dt_cuda_check_tensor(t, dt_cuda_layout(be, (dt_shape){n, k, 1, 1}, DT_CUDA_NCHW, DT_CUDA_F32), what);
}

void dt_cuda_top1(dt_backend *bep, const dt_tensor *logits, const dt_tensor *logits2,
                  const float *targets, const int32_t *labels, int n, int k, double *correct) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  check_plain(be, logits, n, k, "top1 logits");
  if (logits2) check_plain(be, logits2, n, k, "top1 logits2");
  DT_CUDA_CHECK(dt_k_top1(logits->data, logits2 ? logits2->data : NULL, targets, labels, n, k,
                          correct, be->stream));
  dt_cuda_op_done(be, false);
}

void dt_cuda_sq_diff_rows(dt_backend *bep, const dt_tensor *a, const dt_tensor *b, int n, int k,
                          double *out) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  check_plain(be, a, n, k, "sq_diff_rows a");
  check_plain(be, b, n, k, "sq_diff_rows b");
  DT_CUDA_CHECK(dt_k_sq_diff_rows(a->data, b->data, n, k, out, be->stream));
  dt_cuda_op_done(be, false);
}

void dt_cuda_hold_host(dt_backend *bep, bool hold) { dt_cuda_be(bep)->hold_host = hold; }
