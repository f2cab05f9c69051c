/* cuda_extra.c: the CUDA backend's ops of the other families (backend.h): pooling, channel
 * concatenation and padding, dropout, sigmoid, channel scaling, shake-shake mixing, spatial
 * shift and the per-channel bias, by the kernels of kernels/extra.cu. Each works on NCHW and
 * NHWC alike; an op whose output has another shape (pooling, concatenation, padding) writes it
 * in its input's storage order (NHWC when either input of a concatenation is NHWC).
 *
 * Small host arrays that an op takes per call (dropout keys, shake-shake coefficients) go to
 * the device through an op-owned pinned buffer and an event, so the call does not wait for the
 * device and the caller may reuse its array at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

/* A per-call host array on its way to the device. */
typedef struct {
  void *host, *dev; /* pinned host and device copies */
  size_t bytes;
  cudaEvent_t done; /* the last copy out of `host` */
  bool pending;
} host_arg;

static void host_arg_init(host_arg *a, size_t bytes) {
  a->bytes = bytes;
  DT_CUDA_CHECK(cudaMallocHost(&a->host, bytes));
  a->dev = dt_cuda_malloc(bytes);
  DT_CUDA_CHECK(cudaEventCreateWithFlags(&a->done, cudaEventDisableTiming));
}

static void host_arg_free(host_arg *a) {
  if (!a->host) return;
  DT_CUDA_CHECK(cudaEventDestroy(a->done));
  DT_CUDA_CHECK(cudaFreeHost(a->host));
  dt_cuda_free(a->dev);
}

/* The device copy of src (a->bytes), enqueued on the stream. */
static void *host_arg_put(dt_cuda_backend *be, host_arg *a, const void *src) {
  if (a->pending) DT_CUDA_CHECK(cudaEventSynchronize(a->done)); /* normally long done */
  memcpy(a->host, src, a->bytes);
  DT_CUDA_CHECK(cudaMemcpyAsync(a->dev, a->host, a->bytes, cudaMemcpyHostToDevice, be->stream));
  DT_CUDA_CHECK(cudaEventRecord(a->done, be->stream));
  a->pending = true;
  return a->dev;
}

/* One op of this file; the fields a kind does not use stay zero. */
typedef struct {
  dt_op base;
  dt_shape xs, ys, zs; /* input, output, second input / scale */
  const dt_layout *x, *y, *z;
  /* pooling */
  int k, stride, pad;
  bool is_max, incl;
  int *ws; /* argmax of every output of the last forward (max pooling) */
  /* shift */
  int sy, sx;
  /* dropout */
  float p;
  uint8_t *mask; /* keep mask of the last forward with keys, x's layout */
  bool have_mask;
  host_arg arg;    /* dropout keys or shake-shake coefficients (N) */
  double *partial; /* bias gradient: (N, C) partial sums */
} cuda_extra;

static void extra_release(dt_op *op) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_free(e->ws);
  dt_cuda_free(e->mask);
  dt_cuda_free(e->partial);
  host_arg_free(&e->arg);
}

static bool same_shape(dt_shape a, dt_shape b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
}

static cuda_extra *extra_new(dt_backend *bep, dt_shape s, const dt_layout *x, const char *what) {
  if (!same_shape(x->shape, s))
    DT_FATAL("%s: input layout does not match (%d, %d, %d, %d)", what, s.n, s.c, s.h, s.w);
  cuda_extra *e = dt_xcalloc(1, sizeof *e);
  dt_cuda_op_register(dt_cuda_be(bep), &e->base, extra_release);
  e->xs = e->ys = s;
  e->x = e->y = x;
  return e;
}

static size_t hw_of(dt_shape s) { return (size_t)s.h * s.w; }

/* ---- pooling ---- */

dt_op *dt_cuda_pool_create(dt_backend *bep, dt_shape s, const dt_layout *x, dt_pool_kind kind,
                           int ksize, int stride, int pad, bool count_include_pad,
                           const dt_layout **y) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (ksize < 1 || stride < 1 || pad < 0 || 2 * pad > ksize || s.h + 2 * pad < ksize ||
      s.w + 2 * pad < ksize)
    DT_FATAL("pool_create: bad window %d / stride %d / pad %d on %d x %d", ksize, stride, pad, s.h,
             s.w);
  cuda_extra *e = extra_new(bep, s, x, "pool_create");
  e->k = ksize;
  e->stride = stride;
  e->pad = pad;
  e->is_max = kind == DT_POOL_MAX;
  e->incl = count_include_pad;
  e->ys = (dt_shape){s.n, s.c, (s.h + 2 * pad - ksize) / stride + 1,
                     (s.w + 2 * pad - ksize) / stride + 1};
  e->y = dt_cuda_layout(be, e->ys, x->format);
  if (e->is_max) e->ws = dt_cuda_malloc(dt_shape_count(e->ys) * sizeof(int));
  *y = e->y;
  return &e->base;
}

void dt_cuda_pool_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "pool_forward x");
  dt_cuda_check_tensor(y, e->y, "pool_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_pool_forward(x->data, y->data, e->ws, s.n, s.c, s.h, s.w, e->ys.h, e->ys.w,
                                  e->k, e->stride, e->pad, e->is_max, e->incl,
                                  dt_cuda_is_nhwc(e->x), dt_cuda_is_nhwc(e->y), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_pool_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(dy, e->y, "pool_backward dy");
  dt_cuda_check_tensor(dx, e->x, "pool_backward dx");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_pool_backward(dy->data, e->ws, dx->data, s.n, s.c, s.h, s.w, e->ys.h,
                                   e->ys.w, e->k, e->stride, e->pad, e->is_max, e->incl,
                                   dt_cuda_is_nhwc(e->x), dt_cuda_is_nhwc(e->y), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- channel concatenation and padding ---- */

/* Channels [c0, c0 + nc) of dst (layout dl, dc channels) from channels [s0, s0 + nc) of src. */
static void copy_channels(dt_cuda_backend *be, const float *src, const dt_layout *sl, int s0,
                          float *dst, const dt_layout *dl, int d0, int nc) {
  const dt_shape d = dl->shape;
  DT_CUDA_CHECK(dt_k_copy_channels(src, sl ? sl->shape.c : 0, s0, sl && dt_cuda_is_nhwc(sl), dst,
                                   d.c, d0, dt_cuda_is_nhwc(dl), d.n, nc, hw_of(d), be->stream));
}

dt_op *dt_cuda_concat_create(dt_backend *bep, dt_shape as, const dt_layout *a, dt_shape bs,
                             const dt_layout *b, const dt_layout **y) {
  if (as.n != bs.n || as.h != bs.h || as.w != bs.w)
    DT_FATAL("concat_create: (%d, %d, %d, %d) and (%d, %d, %d, %d) differ in N, H or W", as.n,
             as.c, as.h, as.w, bs.n, bs.c, bs.h, bs.w);
  if (!same_shape(b->shape, bs)) DT_FATAL("concat_create: layout of b does not match its shape");
  cuda_extra *e = extra_new(bep, as, a, "concat_create a");
  e->zs = bs;
  e->z = b;
  e->ys = (dt_shape){as.n, as.c + bs.c, as.h, as.w};
  const bool nhwc = dt_cuda_is_nhwc(a) || dt_cuda_is_nhwc(b);
  e->y = dt_cuda_layout(dt_cuda_be(bep), e->ys, nhwc ? DT_CUDA_NHWC : DT_CUDA_NCHW);
  *y = e->y;
  return &e->base;
}

void dt_cuda_concat_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(a, e->x, "concat_forward a");
  dt_cuda_check_tensor(b, e->z, "concat_forward b");
  dt_cuda_check_tensor(y, e->y, "concat_forward y");
  copy_channels(op->be, a->data, e->x, 0, y->data, e->y, 0, e->xs.c);
  copy_channels(op->be, b->data, e->z, 0, y->data, e->y, e->xs.c, e->zs.c);
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_concat_backward(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db) {
  cuda_extra *e = (cuda_extra *)op;
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
  cuda_extra *e = extra_new(bep, xs, x, "pad_channels_create");
  e->ys = (dt_shape){xs.n, c_out, xs.h, xs.w};
  e->y = dt_cuda_layout(dt_cuda_be(bep), e->ys, x->format);
  *y = e->y;
  return &e->base;
}

void dt_cuda_pad_channels_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "pad_channels_forward x");
  dt_cuda_check_tensor(y, e->y, "pad_channels_forward y");
  copy_channels(op->be, x->data, e->x, 0, y->data, e->y, 0, e->xs.c);
  copy_channels(op->be, NULL, NULL, 0, y->data, e->y, e->xs.c, e->ys.c - e->xs.c);
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_pad_channels_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(dy, e->y, "pad_channels_backward dy");
  dt_cuda_check_tensor(dx, e->x, "pad_channels_backward dx");
  copy_channels(op->be, dy->data, e->y, 0, dx->data, e->x, 0, e->xs.c);
  dt_cuda_op_done(op->be, false);
}

/* ---- dropout ---- */

dt_op *dt_cuda_dropout_create(dt_backend *bep, dt_shape s, const dt_layout *x, float p) {
  if (!(p >= 0.0f && p < 1.0f)) DT_FATAL("dropout_create: probability %g not in [0, 1)", p);
  cuda_extra *e = extra_new(bep, s, x, "dropout_create");
  e->p = p; /* the mask and the keys' buffers come with the first forward with keys */
  return &e->base;
}

void dt_cuda_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, e->x, "dropout_forward x");
  dt_cuda_check_tensor(y, e->x, "dropout_forward y");
  const dt_shape s = e->xs;
  if (!keys) {
    if (y->data != x->data)
      DT_CUDA_CHECK(cudaMemcpyAsync(y->data, x->data, dt_shape_count(s) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, be->stream));
    dt_cuda_op_done(be, false);
    return;
  }
  if (!e->mask) {
    e->mask = dt_cuda_malloc(dt_shape_count(s));
    host_arg_init(&e->arg, (size_t)s.n * sizeof(uint64_t));
  }
  const uint64_t *dkeys = host_arg_put(be, &e->arg, keys);
  DT_CUDA_CHECK(dt_k_dropout_forward(x->data, y->data, e->mask, dkeys, e->p, 1.0f / (1.0f - e->p),
                                     s.n, s.c, hw_of(s), dt_cuda_is_nhwc(e->x), be->stream));
  e->have_mask = true;
  dt_cuda_op_done(be, false);
}

void dt_cuda_dropout_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(dy, e->x, "dropout_backward dy");
  dt_cuda_check_tensor(dx, e->x, "dropout_backward dx");
  if (!e->have_mask) DT_FATAL("dropout_backward: no training forward ran before");
  DT_CUDA_CHECK(dt_k_dropout_backward(dy->data, e->mask, dx->data, 1.0f / (1.0f - e->p),
                                      dt_shape_count(e->xs), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- sigmoid ---- */

dt_op *dt_cuda_sigmoid_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  return &extra_new(bep, s, x, "sigmoid_create")->base;
}

void dt_cuda_sigmoid_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "sigmoid_forward x");
  dt_cuda_check_tensor(y, e->x, "sigmoid_forward y");
  DT_CUDA_CHECK(dt_k_sigmoid_forward(x->data, y->data, dt_shape_count(e->xs), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_sigmoid_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(y, e->x, "sigmoid_backward y");
  dt_cuda_check_tensor(dy, e->x, "sigmoid_backward dy");
  dt_cuda_check_tensor(dx, e->x, "sigmoid_backward dx");
  DT_CUDA_CHECK(dt_k_sigmoid_backward(y->data, dy->data, dx->data, dt_shape_count(e->xs),
                                      op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- channel scaling: s (N, C, 1, 1), stored as (N, C) in any layout ---- */

dt_op *dt_cuda_scale_create(dt_backend *bep, dt_shape xs, const dt_layout *x, const dt_layout *sl) {
  const dt_shape ss = {xs.n, xs.c, 1, 1};
  if (!same_shape(sl->shape, ss))
    DT_FATAL("scale_create: scale layout is not (%d, %d, 1, 1)", xs.n, xs.c);
  cuda_extra *e = extra_new(bep, xs, x, "scale_create x");
  e->zs = ss;
  e->z = sl;
  return &e->base;
}

void dt_cuda_scale_forward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "scale_forward x");
  dt_cuda_check_tensor(sc, e->z, "scale_forward s");
  dt_cuda_check_tensor(y, e->x, "scale_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_scale_forward(x->data, sc->data, y->data, s.n, s.c, hw_of(s),
                                   dt_cuda_is_nhwc(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_scale_backward(dt_op *op, const dt_tensor *x, const dt_tensor *sc,
                            const dt_tensor *dy, dt_tensor *dx, dt_tensor *ds) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "scale_backward x");
  dt_cuda_check_tensor(sc, e->z, "scale_backward s");
  dt_cuda_check_tensor(dy, e->x, "scale_backward dy");
  const dt_shape s = e->xs;
  const bool nhwc = dt_cuda_is_nhwc(e->x);
  if (ds) {
    dt_cuda_check_tensor(ds, e->z, "scale_backward ds");
    DT_CUDA_CHECK(dt_k_scale_ds(x->data, dy->data, ds->data, s.n, s.c, hw_of(s), nhwc,
                                op->be->stream));
  }
  if (dx) {
    dt_cuda_check_tensor(dx, e->x, "scale_backward dx");
    DT_CUDA_CHECK(dt_k_scale_forward(dy->data, sc->data, dx->data, s.n, s.c, hw_of(s), nhwc,
                                     op->be->stream));
  }
  dt_cuda_op_done(op->be, false);
}

/* ---- shake-shake mixing ---- */

dt_op *dt_cuda_shake_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  cuda_extra *e = extra_new(bep, s, x, "shake_create");
  host_arg_init(&e->arg, (size_t)s.n * sizeof(float));
  return &e->base;
}

void dt_cuda_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                           dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(a, e->x, "shake_forward a");
  dt_cuda_check_tensor(b, e->x, "shake_forward b");
  dt_cuda_check_tensor(y, e->x, "shake_forward y");
  const size_t count = dt_shape_count(e->xs);
  const float *da = host_arg_put(op->be, &e->arg, alpha);
  DT_CUDA_CHECK(dt_k_shake_forward(a->data, b->data, da, y->data, count / (size_t)e->xs.n, count,
                                   op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_shake_backward(dt_op *op, const dt_tensor *dy, const float *beta, dt_tensor *da,
                            dt_tensor *db) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(dy, e->x, "shake_backward dy");
  if (da) dt_cuda_check_tensor(da, e->x, "shake_backward da");
  if (db) dt_cuda_check_tensor(db, e->x, "shake_backward db");
  if (!da && !db) return;
  const size_t count = dt_shape_count(e->xs);
  const float *dbeta = host_arg_put(op->be, &e->arg, beta);
  DT_CUDA_CHECK(dt_k_shake_backward(dy->data, dbeta, da ? da->data : NULL, db ? db->data : NULL,
                                    count / (size_t)e->xs.n, count, op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- spatial shift ---- */

dt_op *dt_cuda_shift_create(dt_backend *bep, dt_shape s, const dt_layout *x, int shift_y,
                            int shift_x) {
  cuda_extra *e = extra_new(bep, s, x, "shift_create");
  e->sy = shift_y;
  e->sx = shift_x;
  return &e->base;
}

void dt_cuda_shift_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "shift_forward x");
  dt_cuda_check_tensor(y, e->x, "shift_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_shift(x->data, y->data, s.n, s.c, s.h, s.w, e->sy, e->sx,
                           dt_cuda_is_nhwc(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_shift_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(dy, e->x, "shift_backward dy");
  dt_cuda_check_tensor(dx, e->x, "shift_backward dx");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_shift(dy->data, dx->data, s.n, s.c, s.h, s.w, -e->sy, -e->sx,
                           dt_cuda_is_nhwc(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- per-channel bias ---- */

dt_op *dt_cuda_bias_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  cuda_extra *e = extra_new(bep, s, x, "bias_create");
  e->partial = dt_cuda_malloc((size_t)s.n * s.c * sizeof(double));
  return &e->base;
}

void dt_cuda_bias_forward(dt_op *op, const dt_tensor *x, const float *b, dt_tensor *y) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(x, e->x, "bias_forward x");
  dt_cuda_check_tensor(y, e->x, "bias_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_bias_forward(x->data, b, y->data, s.n, s.c, hw_of(s), dt_cuda_is_nhwc(e->x),
                                  op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_bias_backward(dt_op *op, const dt_tensor *dy, float *db) {
  cuda_extra *e = (cuda_extra *)op;
  dt_cuda_check_tensor(dy, e->x, "bias_backward dy");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_bias_backward(dy->data, e->partial, db, s.n, s.c, hw_of(s),
                                   dt_cuda_is_nhwc(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}
