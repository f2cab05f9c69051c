/* cuda_step_kernels.h: the CUDA backend's ops for a training step's device-side bookkeeping
 * (backend.h, "the step's device-side bookkeeping"): the launchers of kernels/step.cu, as
 * cuda_kernels.h declares the others, and the ops of src/cuda/cuda_step.c. */
#ifndef DT_CUDA_STEP_KERNELS_H
#define DT_CUDA_STEP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[i] += a * (x[i] - x2[i]) (x2 NULL: a * x[i]), each operation rounded (no FMA). */
cudaError_t dt_k_axpy(float *y, const float *x, const float *x2, size_t n, float a,
                      cudaStream_t stream);
/* *correct += the top-1 count of z = z1 (or 0.5f (z1 + z2)), (N, K) plain: with labels the
 * rows whose label ranks first, else sum_i t[i, argmax z_i]; the rows' values summed in row
 * order in double (backend.h top1). */
cudaError_t dt_k_top1(const float *z1, const float *z2, const float *t, const int32_t *labels,
                      int n, int k, double *correct, cudaStream_t stream);
/* out[i] = sum_c ((double)a[i, c] - b[i, c])^2 in order. */
cudaError_t dt_k_sq_diff_rows(const float *a, const float *b, int n, int k, double *out,
                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#ifndef __CUDACC__
#include "backend.h"

void dt_cuda_copy(dt_backend *be, void *dst, const void *src, size_t bytes);
void dt_cuda_axpy(dt_backend *be, float *y, const float *x, const float *x2, size_t n, float a);
void dt_cuda_flag_nonfinite(dt_backend *be, const float *x, size_t n, int32_t *flag);
void dt_cuda_top1(dt_backend *be, const dt_tensor *logits, const dt_tensor *logits2,
                  const float *targets, const int32_t *labels, int n, int k, double *correct);
void dt_cuda_sq_diff_rows(dt_backend *be, const dt_tensor *a, const dt_tensor *b, int n, int k,
                          double *out);
void dt_cuda_hold_host(dt_backend *be, bool hold);
#endif

#endif
