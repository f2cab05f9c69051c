/* cpu_internal.h: private pieces shared by the files of the oneDNN CPU backend (src/cpu/).
 *
 * Every op keeps its primitives and dnnl memory objects from *_create; the memory objects
 * are created without a buffer (DNNL_MEMORY_NONE) and pointed at the caller's tensors on each
 * call, so running an op allocates nothing and creates nothing. All primitives use a user
 * scratchpad: one buffer per backend, grown to the largest need, shared by every primitive
 * (the backend runs one primitive at a time). */
#ifndef DT_CPU_INTERNAL_H
#define DT_CPU_INTERNAL_H

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "backend.h"
#include "backend_live_ops.h"
#include "precision.h"

/* Every oneDNN call goes through this: a failure is a runtime error (docs/architecture.md
 * "Errors"). */
#define DT_DNNL_CHECK(expr)                                                         \
  do {                                                                              \
    dnnl_status_t dt_dnnl_s_ = (expr);                                              \
    if (dt_dnnl_s_ != dnnl_success)                                                 \
      DT_FATAL("oneDNN call %s failed: %s", #expr, dnnl_status2str(dt_dnnl_s_));    \
  } while (0)

/* A storage order: one oneDNN memory descriptor. Layouts are interned per backend (equal
 * descriptors give the same pointer) and freed with it. */
struct dt_layout {
  dnnl_memory_desc_t md;
  struct dt_layout *next;
};

typedef struct dt_cpu_xfer dt_cpu_xfer;

typedef struct {
  dt_backend base; /* first: a dt_backend * is a dt_cpu_backend * */
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  struct dt_layout *layouts; /* interned layouts */
  dt_cpu_xfer *xfers;        /* upload / download reorders, one per layout */
  dt_live_ops live;          /* live ops, freed by destroy if the caller has not */
  void *scratchpad;          /* shared user scratchpad of every primitive */
  size_t scratchpad_bytes;
  int act_block;             /* channel block of activations (dt_cpu_act_block), 0: not probed */
  int ref_prims;             /* live primitives on oneDNN's reference code (reorders aside) */
  /* Arithmetic of the ops created from now on (set_precision). act_dt is the element type of
   * the activations and activation gradients the ops choose layouts for: dnnl_f32, or in
   * native mode (bf16 on a CPU with bf16 instructions) dnnl_bf16. A 16-bit precision with act_dt f32 is emulated: convolutions round
   * their operands (precision.h) into round_buf, shared like the scratchpad and grown by
   * conv_create to the largest need; fp32 and native convolutions never touch them. */
  dt_precision precision;
  dnnl_data_type_t act_dt;
  float *round_buf[3];
  size_t round_bytes[3];
} dt_cpu_backend;

/* True when the backend's 16-bit precision is emulated (rounding in fp32 tensors). */
static inline bool dt_cpu_emulated(const dt_cpu_backend *be) {
  return be->precision != DT_PRECISION_FP32 && be->act_dt == dnnl_f32;
}

/* Common head of every op; each kind embeds it as its first member. */
struct dt_op {
  dt_live_link link; /* first: the backend's list of live ops (backend_live_ops.h) */
  dt_cpu_backend *be;
  void (*release)(dt_op *op); /* frees the kind's primitives and buffers, not the struct */
};

/* A primitive with its descriptor and the memory object of its scratchpad (NULL if none). */
typedef struct {
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t prim;
  dnnl_memory_t scratch;
  int *ref_count; /* the backend's live reference-code count, when this one is counted */
  /* oneDNN's jit primitives divide their work for the OpenMP thread count at creation and run
   * that many threads whatever the count is later (bench/rethread.c shows it), so a primitive
   * made for another count than the backend's now is re-created on its next run. */
  int threads;               /* the thread count it was created for */
  dnnl_primitive_desc_t hint; /* a copy of the forward descriptor it was created with, or NULL */
} dt_cpu_prim;

/* A reorder of a small parameter array (weights, their gradients) between the plain layout
 * (logical, or ohwi for KRSC convolution weights: backend.h weights_krsc) and the layout a
 * primitive chose. `same` means no reorder is needed: the primitive reads or writes the
 * caller's array directly. */
typedef struct {
  bool same;
  dt_cpu_prim re;
  dnnl_memory_t from, to;
} dt_cpu_reorder;

static inline dt_cpu_backend *dt_cpu_be(dt_backend *be) { return (dt_cpu_backend *)be; }

/* ---- layouts and memory objects (backend_cpu.c) ---- */
const dt_layout *dt_cpu_layout_intern(dt_cpu_backend *be, const dnnl_memory_desc_t *md);
const dt_layout *dt_cpu_layout_plain(dt_backend *be, dt_shape shape);
/* Descriptor with the given dims and tag (f32). */
dnnl_memory_desc_t dt_cpu_md(int ndims, const dnnl_dim_t *dims, dnnl_format_tag_t tag);
/* The same with element type dt (dnnl_f32, dnnl_bf16, dnnl_f16). */
dnnl_memory_desc_t dt_cpu_md_dt(int ndims, const dnnl_dim_t *dims, dnnl_data_type_t dt,
                                dnnl_format_tag_t tag);
/* md with its element type replaced by dt (same dims and blocking; strides count elements). */
dnnl_memory_desc_t dt_cpu_md_retype(const dnnl_memory_desc_t *md, dnnl_data_type_t dt);
/* The channel block oneDNN gives the activations of a typical convolution on this CPU (16 with
 * AVX-512, 8 with AVX2; 1 when it keeps them plain), probed once. Convolutions write their
 * outputs in nChw<block>c whenever oneDNN is as fast that way, so that tensors meeting at an
 * addition share one layout. */
int dt_cpu_act_block(dt_cpu_backend *be);
/* The channel block of a 4-d descriptor: b for nChw<b>c, 1 for NCHW / NHWC, 0 otherwise. */
int dt_cpu_md_block(const dnnl_memory_desc_t *md);
/* Fatal unless the tensor has the expected layout (shape mistakes are programming errors). */
void dt_cpu_check_tensor(const dt_tensor *t, const dt_layout *expected, const char *what);
dnnl_memory_t dt_cpu_mem(dt_cpu_backend *be, const dnnl_memory_desc_t *md);
void dt_cpu_mem_free(dnnl_memory_t *mem);
void dt_cpu_bind(dt_cpu_backend *be, dnnl_memory_t mem, const void *ptr);

/* ---- primitives ---- */
/* Create the primitive of an op descriptor; post_ops may be NULL, hint is the forward
 * primitive descriptor of a backward primitive. Fatal (naming `what`) if unimplemented. */
void dt_cpu_prim_create(dt_cpu_backend *be, dt_cpu_prim *p, const void *op_desc,
                        const_dnnl_post_ops_t post_ops, const_dnnl_primitive_desc_t hint,
                        const char *what);
/* The same, returning false instead of failing when oneDNN has no implementation. */
bool dt_cpu_prim_try_create(dt_cpu_backend *be, dt_cpu_prim *p, const void *op_desc,
                            const_dnnl_post_ops_t post_ops, const_dnnl_primitive_desc_t hint);
/* True when oneDNN picked its reference (plain C++ loop, very slow) implementation. */
bool dt_cpu_prim_is_ref(const dt_cpu_prim *p);
/* How many primitives other than reorders that run oneDNN's reference code the backend
 * holds now (created and not freed). Zero in every family on AVX2 and AVX-512 (the tests
 * check); a reference reorder is only a copy and is not counted. */
int dt_cpu_ref_prims(dt_backend *be);
void dt_cpu_prim_reorder(dt_cpu_backend *be, dt_cpu_prim *p, const dnnl_memory_desc_t *from,
                         const dnnl_memory_desc_t *to, const char *what);
/* The same; with accumulate the reorder adds into its destination (a sum post-op). */
void dt_cpu_prim_reorder_sum(dt_cpu_backend *be, dt_cpu_prim *p, const dnnl_memory_desc_t *from,
                             const dnnl_memory_desc_t *to, bool accumulate, const char *what);
/* Copy of the memory descriptor a primitive chose for one of its arguments. */
dnnl_memory_desc_t dt_cpu_prim_md(const dt_cpu_prim *p, dnnl_query_t what, int index);
/* Execute with the given arguments (the scratchpad is added here) and wait. At most 12. A
 * primitive created for another thread count than the backend's is first re-created for it,
 * unless oneDNN would then choose another layout for one of its arguments (it stays as it was:
 * the tensors and reorders around it were made for those layouts). */
void dt_cpu_prim_exec(dt_cpu_backend *be, dt_cpu_prim *p, int nargs, const dnnl_exec_arg_t *args);
void dt_cpu_prim_free(dt_cpu_prim *p);

/* ---- parameter reorders ---- */
void dt_cpu_reorder_init(dt_cpu_backend *be, dt_cpu_reorder *r, const dnnl_memory_desc_t *from,
                         const dnnl_memory_desc_t *to, const char *what);
/* With accumulate, dst += reorder(src) (never `same`: the sum always runs). */
void dt_cpu_reorder_init_sum(dt_cpu_backend *be, dt_cpu_reorder *r, const dnnl_memory_desc_t *from,
                             const dnnl_memory_desc_t *to, bool accumulate, const char *what);
void dt_cpu_reorder_run(dt_cpu_backend *be, dt_cpu_reorder *r, const void *src, void *dst);
void dt_cpu_reorder_free(dt_cpu_reorder *r);

/* ---- ops ---- */
void dt_cpu_op_register(dt_cpu_backend *be, dt_op *op, void (*release)(dt_op *op));
void dt_cpu_op_free(dt_op *op);

dt_op *dt_cpu_conv_create(dt_backend *be, const dt_conv_params *p, const dt_layout *x,
                          const dt_layout **y);
void dt_cpu_conv_forward(dt_op *op, const dt_tensor *x, const float *w, dt_tensor *y,
                         bool accumulate);
void dt_cpu_conv_backward_data(dt_op *op, const dt_tensor *dy, const float *w, dt_tensor *dx);
void dt_cpu_conv_backward_weights(dt_op *op, const dt_tensor *x, const dt_tensor *dy, float *dw);
/* oneDNN's implementation name of a convolution's pass (0 forward, 1 backward data,
 * 2 backward weights; "" for a backward-data pass the op does not have), for tests. */
const char *dt_cpu_conv_impl(dt_op *op, int pass);

dt_op *dt_cpu_bn_create(dt_backend *be, dt_shape shape, const dt_layout *x, float eps,
                        bool fuse_relu);
void dt_cpu_bn_forward_train(dt_op *op, const dt_tensor *x, const float *gamma,
                             const float *beta, dt_tensor *y, float *save_mean, float *save_var,
                             float *running_mean, float *running_var, float momentum);
void dt_cpu_bn_forward_infer(dt_op *op, const dt_tensor *x, const float *gamma,
                             const float *beta, const float *running_mean,
                             const float *running_var, dt_tensor *y);
void dt_cpu_bn_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *gamma,
                        const float *save_mean, const float *save_var, dt_tensor *dx,
                        float *dgamma, float *dbeta);

dt_op *dt_cpu_eltwise_create(dt_backend *be, dt_shape shape, const dt_layout *x);
void dt_cpu_relu_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cpu_relu_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx);
void dt_cpu_add(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y);
void dt_cpu_accumulate(dt_op *op, const dt_tensor *src, dt_tensor *dst);

dt_op *dt_cpu_gap_create(dt_backend *be, dt_shape x_shape, const dt_layout *x,
                         const dt_layout **y);
void dt_cpu_gap_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cpu_gap_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);

dt_op *dt_cpu_linear_create(dt_backend *be, dt_shape x_shape, const dt_layout *x, int k,
                            const dt_layout **y);
void dt_cpu_linear_forward(dt_op *op, const dt_tensor *x, const float *w, const float *b,
                           dt_tensor *y);
void dt_cpu_linear_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *w,
                            dt_tensor *dx, float *dw, float *db);

/* ---- layout views and the plain-loop op (cpu_view.c) ----
 * The plain OpenMP loops of cpu_concat_pad_shift.c, cpu_dropout_shake.c and
 * cpu_sigmoid_scale_bias.c run over the tensor's own layout: NCHW, NHWC and the channel-blocked
 * nChw8c / nChw16c, described by a dt_cpu_view. In blocked layouts the channels past C in the
 * last block are padding; every such op writes them as zero, so a padded lane never carries
 * garbage into oneDNN primitives (a gradient buffer may be the graph's shared scratch).
 * Elements are fp32 or bf16 (the layout's data type): the loops load each element as fp32,
 * compute in fp32 and round once when they store (dt_cpu_store). An op's tensors all have one
 * element type (a mix is refused), but for the channel scaling's s and ds (N, C, 1, 1): fp32
 * with a bf16 x, as the squeeze-and-excitation gate comes from fp32 linear layers. */
/* Element (n, c, h, w) lives at element n sn + (c / b) scb + h sh + w sw + c % b. */
typedef struct {
  int n, c, h, w;
  int b;  /* channel block: 1 (NCHW, NHWC) or 8 / 16 */
  int cp; /* channels rounded up to the block */
  long sn, scb, sh, sw;
  size_t total;        /* elements in the buffer, padding included */
  dnnl_data_type_t dt; /* dnnl_f32 or dnnl_bf16 */
  int es;              /* bytes per element: 4 or 2 */
} dt_cpu_view;

static inline long dt_cpu_view_off(const dt_cpu_view *v, int n, int c, int h, int w) {
  return n * v->sn + (long)(c / v->b) * v->scb + h * v->sh + w * v->sw + c % v->b;
}

/* Element off of an fp32 or bf16 buffer, as fp32 (bf16 is the top half of the fp32 pattern).
 * The hot loops pass dt as a constant (each is an inline function called once per type), so
 * the fp32 version compiles to the plain float loop and vectorises: GCC at -O2 does not
 * unswitch a loop on a run-time type. */
static inline float dt_cpu_load(dnnl_data_type_t dt, const void *p, long off) {
  if (dt == dnnl_bf16) return dt_precision_float((uint32_t)((const uint16_t *)p)[off] << 16);
  return ((const float *)p)[off];
}

/* Store x at element off; bf16 rounds to nearest even (precision.h's dt_round_bf16_bits) and
 * keeps the top 16 bits. */
static inline void dt_cpu_store(dnnl_data_type_t dt, void *p, long off, float x) {
  if (dt == dnnl_bf16)
    ((uint16_t *)p)[off] = (uint16_t)(dt_round_bf16_bits(dt_precision_bits(x)) >> 16);
  else
    ((float *)p)[off] = x;
}

static inline float dt_cpu_view_load(const dt_cpu_view *v, const void *p, long off) {
  return dt_cpu_load(v->dt, p, off);
}

static inline void dt_cpu_view_store(const dt_cpu_view *v, void *p, long off, float x) {
  dt_cpu_store(v->dt, p, off, x);
}

/* An op of the plain loops (cpu_view.c): its layouts and views, per-kind settings, no oneDNN
 * primitive but the channel scaling's. */
typedef struct {
  dt_op base;
  const dt_layout *x, *y, *z; /* inputs / outputs, per kind */
  dt_cpu_view vx, vy, vz;
  int k, sy, sx;
  float p;
  float *buf; /* dropout: the mask (x layout), values 0 or 1 / (1 - p) */
  bool have_mask;
  /* scale forward on oneDNN: s reordered into x's blocking, then binary mul */
  bool scale_prim;
  dt_cpu_reorder s_re;
  float *s_buf;
  dt_cpu_prim mul;
  dnnl_memory_t m_x, m_s, m_y;
} dt_cpu_simple;

/* The view of layout l (fatal, naming `what`, for a layout or data type the loops do not
 * understand). */
dt_cpu_view dt_cpu_view_of(const dt_layout *l, const char *what);
/* The layout of shape s with x's channel blocking (NCHW / NHWC / nChw<b>c) and element type. */
const dt_layout *dt_cpu_view_like(dt_cpu_backend *be, const dt_cpu_view *x, dt_shape s);
/* True when the pixels of one (n, channel block) are one contiguous run of H W b elements
 * (NCHW, nChw<b>c); NHWC is not. */
bool dt_cpu_view_dense(const dt_cpu_view *v);
/* dst channels [d0, d0 + nc) = src channels [s0, s0 + nc), all N, H, W (one element type:
 * fatal otherwise). */
void dt_cpu_copy_channels(const dt_cpu_view *sv, const void *src, int s0, const dt_cpu_view *dv,
                          void *dst, int d0, int nc);
/* dst channels [c0, c1) = 0 (c1 may reach the padded channel count). */
void dt_cpu_zero_channels(const dt_cpu_view *dv, void *dst, int c0, int c1);
/* Flat loops over a buffer run in chunks of this many elements and pick the typed version of
 * their body once per chunk, not per element. */
#define DT_CPU_CHUNK 4096L
/* A registered plain-loop op with x as input and output layout (fatal, naming `what`, when x
 * does not hold `shape`). */
dt_cpu_simple *dt_cpu_simple_new(dt_backend *bep, dt_shape shape, const dt_layout *x,
                                 const char *what);

/* ---- pooling (cpu_pool.c), concatenation, channel padding, spatial shift
 * (cpu_concat_pad_shift.c), dropout, shake-shake mixing (cpu_dropout_shake.c), sigmoid, channel
 * scaling, per-channel bias (cpu_sigmoid_scale_bias.c) ---- */
dt_op *dt_cpu_pool_create(dt_backend *bep, dt_shape s, const dt_layout *x, dt_pool_kind kind,
                          int ksize, int stride, int pad, bool count_include_pad,
                          const dt_layout **y);
void dt_cpu_pool_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cpu_pool_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cpu_concat_create(dt_backend *bep, dt_shape as, const dt_layout *a, dt_shape bs,
                            const dt_layout *b, const dt_layout **y);
void dt_cpu_concat_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y);
void dt_cpu_concat_backward(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db);
dt_op *dt_cpu_pad_channels_create(dt_backend *bep, dt_shape xs, const dt_layout *x, int c_out,
                                  const dt_layout **y);
void dt_cpu_pad_channels_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cpu_pad_channels_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cpu_dropout_create(dt_backend *bep, dt_shape shape, const dt_layout *x, float p);
void dt_cpu_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y);
void dt_cpu_dropout_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cpu_sigmoid_create(dt_backend *bep, dt_shape s, const dt_layout *x);
void dt_cpu_sigmoid_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cpu_sigmoid_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cpu_scale_create(dt_backend *bep, dt_shape xs, const dt_layout *x, const dt_layout *sl);
void dt_cpu_scale_forward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, dt_tensor *y);
void dt_cpu_scale_backward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, const dt_tensor *dy,
                           dt_tensor *dx, dt_tensor *ds);
dt_op *dt_cpu_shake_create(dt_backend *bep, dt_shape shape, const dt_layout *x);
void dt_cpu_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                          dt_tensor *y);
void dt_cpu_shake_backward(dt_op *op, const dt_tensor *dy, const float *beta, dt_tensor *da,
                           dt_tensor *db);
dt_op *dt_cpu_shift_create(dt_backend *bep, dt_shape shape, const dt_layout *x, int sy, int sx);
void dt_cpu_shift_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cpu_shift_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cpu_bias_create(dt_backend *bep, dt_shape shape, const dt_layout *x);
void dt_cpu_bias_forward(dt_op *op, const dt_tensor *x, const float *bias, dt_tensor *y);
void dt_cpu_bias_backward(dt_op *op, const dt_tensor *dy, float *db);

/* ---- optimizer updates (cpu_optim.c) ---- */
void dt_cpu_sgd_update(dt_backend *be, float *w, float *g, float *buf, size_t n, float lr,
                       float momentum, float wd, bool nesterov, bool first, float grad_scale,
                       const int32_t *skip);
void dt_cpu_lars_update(dt_backend *be, float *w, float *g, float *buf, size_t n, double lr,
                        float momentum, float wd, double eps, double eta, double threshold,
                        float grad_scale, const int32_t *skip);
void dt_cpu_adam_update(dt_backend *be, float *w, float *g, float *m, float *v, float *vmax,
                        size_t n, float step, float beta1, float beta2, float eps, float bc2_sqrt,
                        float wd, float grad_scale, const int32_t *skip);
bool dt_cpu_all_finite(dt_backend *be, const float *x, size_t n);

/* ---- the step's bookkeeping (cpu_step.c) ---- */
void dt_cpu_copy(dt_backend *be, void *dst, const void *src, size_t bytes);
void dt_cpu_axpy(dt_backend *be, float *y, const float *x, const float *x2, size_t n, float a);
void dt_cpu_flag_nonfinite(dt_backend *be, const float *x, size_t n, int32_t *flag);
void dt_cpu_top1(dt_backend *be, const dt_tensor *logits, const dt_tensor *logits2,
                 const float *targets, const int32_t *labels, int n, int k, double *correct);
void dt_cpu_sq_diff_rows(dt_backend *be, const dt_tensor *a, const dt_tensor *b, int n, int k,
                         double *out);

#endif
