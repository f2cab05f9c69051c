/* cuda_concat_pad_shift.c: the CUDA backend's ops that only move values (backend.h):
 * concatenation, channel padding and the spatial shift, by the kernels of
 * kernels/concat_pad_shift.cu. Padding and the shift keep their input's element type; a
 * concatenation takes its inputs' (the activations' when they differ: cuda_dtype.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

/* ---- channel concatenation and padding ---- */

/* Channels [c0, c0 + nc) of dst (layout dl, dc channels) from channels [s0, s0 + nc) of src
 * (zero when src is NULL), converting between the layouts' element types. */
static void copy_channels(dt_cuda_backend *be, const void *src, const dt_layout *sl, int s0,
                          void *dst, const dt_layout *dl, int d0, int nc) {
  const dt_shape d = dl->shape;
  DT_CUDA_CHECK(dt_k_copy_channels(src, sl ? dt_cuda_dt(sl) : dt_cuda_dt(dl), sl ? sl->shape.c : 0,
                                   s0, sl && dt_cuda_is_nhwc(sl), dst, dt_cuda_dt(dl), d.c, d0,
                                   dt_cuda_is_nhwc(dl), d.n, nc, dt_cuda_hw_of(d), be->stream));
}

dt_op *dt_cuda_concat_create(dt_backend *bep, dt_shape as, const dt_layout *a, dt_shape bs,
                             const dt_layout *b, const dt_layout **y) {
  if (as.n != bs.n || as.h != bs.h || as.w != bs.w)
    DT_FATAL("concat_create: (%d, %d, %d, %d) and (%d, %d, %d, %d) differ in N, H or W", as.n, as.c,
             as.h, as.w, bs.n, bs.c, bs.h, bs.w);
  if (!dt_cuda_same_shape(b->shape, bs))
    DT_FATAL("concat_create: layout of b does not match its shape");
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, as, a, "concat_create a");
  e->zs = bs;
  e->z = b;
  e->ys = (dt_shape){as.n, as.c + bs.c, as.h, as.w};
  const bool nhwc = dt_cuda_is_nhwc(a) || dt_cuda_is_nhwc(b);
  dt_cuda_backend *be = dt_cuda_be(bep);
  e->y = dt_cuda_layout(be, e->ys, nhwc ? DT_CUDA_NHWC : DT_CUDA_NCHW,
                        dt_cuda_concat_dtype(dt_cuda_dt(a), dt_cuda_dt(b), be->act));
  *y = e->y;
  return &e->base;
}

void dt_cuda_concat_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(a, e->x, "concat_forward a");
  dt_cuda_check_tensor(b, e->z, "concat_forward b");
  dt_cuda_check_tensor(y, e->y, "concat_forward y");
  copy_channels(op->be, a->data, e->x, 0, y->data, e->y, 0, e->xs.c);
  copy_channels(op->be, b->data, e->z, 0, y->data, e->y, e->xs.c, e->zs.c);
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_concat_backward(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(dy, e->y, "concat_backward dy");
  if (da) {
    dt_cuda_check_tensor(da, e->x, "concat_backward da");
    copy_channels(op->be, dy->data, e->y, 0, da->data, e->x, 0, e->xs.c);
  }
  if (db) {
    dt_cuda_check_tensor(db, e->z, "concat_backward db");
    copy_channels(op->be, dy->data, e->y, e->xs.c, db->data, e->z, 0, e->zs.c);
  }
  dt_cuda_op_done(op->be, false);
}

dt_op *dt_cuda_pad_channels_create(dt_backend *bep, dt_shape xs, const dt_layout *x, int c_out,
                                   const dt_layout **y) {
  if (c_out < xs.c) DT_FATAL("pad_channels_create: %d channels cannot pad to %d", xs.c, c_out);
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, xs, x, "pad_channels_create");
  e->ys = (dt_shape){xs.n, c_out, xs.h, xs.w};
  e->y = dt_cuda_layout(dt_cuda_be(bep), e->ys, x->format, x->dtype);
  *y = e->y;
  return &e->base;
}

void dt_cuda_pad_channels_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(x, e->x, "pad_channels_forward x");
  dt_cuda_check_tensor(y, e->y, "pad_channels_forward y");
  copy_channels(op->be, x->data, e->x, 0, y->data, e->y, 0, e->xs.c);
  copy_channels(op->be, NULL, NULL, 0, y->data, e->y, e->xs.c, e->ys.c - e->xs.c);
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_pad_channels_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(dy, e->y, "pad_channels_backward dy");
  dt_cuda_check_tensor(dx, e->x, "pad_channels_backward dx");
  copy_channels(op->be, dy->data, e->y, 0, dx->data, e->x, 0, e->xs.c);
  dt_cuda_op_done(op->be, false);
}

/* ---- spatial shift ---- */

dt_op *dt_cuda_shift_create(dt_backend *bep, dt_shape s, const dt_layout *x, int shift_y,
                            int shift_x) {
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, s, x, "shift_create");
  e->sy = shift_y;
  e->sx = shift_x;
  return &e->base;
}

/* dst[i, j] = src[i + sign sy, j + sign sx] (0 outside): the forward shift (sign 1) and its
 * gradient (sign -1); what_src / what_dst name the tensors in a layout mismatch. */
static void shift_run(dt_op *op, const dt_tensor *src, dt_tensor *dst, int sign,
                      const char *what_src, const char *what_dst) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(src, e->x, what_src);
  dt_cuda_check_tensor(dst, e->x, what_dst);
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_shift(src->data, dst->data, s.n, s.c, s.h, s.w, sign * e->sy, sign * e->sx,
                           dt_cuda_is_nhwc(e->x), dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_shift_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  shift_run(op, x, y, 1, "shift_forward x", "shift_forward y");
}

void dt_cuda_shift_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  shift_run(op, dy, dx, -1, "shift_backward dy", "shift_backward dx");
}
