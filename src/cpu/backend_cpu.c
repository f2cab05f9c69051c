/* backend_cpu.c: the oneDNN CPU backend (docs/architecture.md "Backend table"): engine and stream,
 * layouts, memory, host transfers, the primitive helpers every op file uses, the loss, the choice
 * of precision and the table of function pointers. Convolutions live in cpu_conv.c, batch norm in
 * cpu_bn.c, the other ops in cpu_ops.c. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/backend_cpu.h"
#include "cpu/cpu_internal.h"

/* Upload / download reorders between plain NCHW and one layout, made on first use. */
struct dt_cpu_xfer {
  const dt_layout *layout;
  bool plain; /* the layout is NCHW itself: a memcpy */
  dt_cpu_prim up, down;
  dnnl_memory_t m_plain, m_layout;
  dt_cpu_xfer *next;
};

/* ---- layouts and memory objects ---- */

const dt_layout *dt_cpu_layout_intern(dt_cpu_backend *be, const dnnl_memory_desc_t *md) {
  for (struct dt_layout *l = be->layouts; l; l = l->next)
    if (dnnl_memory_desc_equal(&l->md, md)) return l;
  struct dt_layout *l = dt_xcalloc(1, sizeof *l);
  l->md = *md;
  l->next = be->layouts;
  be->layouts = l;
  return l;
}

dnnl_memory_desc_t dt_cpu_md(int ndims, const dnnl_dim_t *dims, dnnl_format_tag_t tag) {
  return dt_cpu_md_dt(ndims, dims, dnnl_f32, tag);
}

dnnl_memory_desc_t dt_cpu_md_dt(int ndims, const dnnl_dim_t *dims, dnnl_data_type_t dt,
                                dnnl_format_tag_t tag) {
  dnnl_memory_desc_t md;
  DT_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&md, ndims, dims, dt, tag));
  return md;
}

dnnl_memory_desc_t dt_cpu_md_retype(const dnnl_memory_desc_t *md, dnnl_data_type_t dt) {
  dnnl_memory_desc_t r = *md;
  if (md->format_kind != dnnl_blocked && md->format_kind != dnnl_format_kind_any)
    DT_FATAL("dt_cpu_md_retype: a descriptor of format kind %d", (int)md->format_kind);
  r.data_type = dt;
  r.extra.flags = 0; /* compensation flags belong to int8 weights only */
  return r;
}

const dt_layout *dt_cpu_layout_plain(dt_backend *be, dt_shape s) {
  if (s.n <= 0 || s.c <= 0 || s.h <= 0 || s.w <= 0)
    DT_FATAL("layout_plain: bad shape (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  dnnl_dims_t dims = {s.n, s.c, s.h, s.w};
  dnnl_memory_desc_t md = dt_cpu_md(4, dims, dnnl_nchw);
  return dt_cpu_layout_intern(dt_cpu_be(be), &md);
}

int dt_cpu_md_block(const dnnl_memory_desc_t *md) {
  if (md->ndims != 4 || md->format_kind != dnnl_blocked) return 0;
  const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
  if (bd->inner_nblks == 0) return 1;
  if (bd->inner_nblks == 1 && bd->inner_idxs[0] == 1) return (int)bd->inner_blks[0];
  return 0;
}

int dt_cpu_act_block(dt_cpu_backend *be) {
  if (be->act_block) return be->act_block;
  /* A 3x3 convolution 64 -> 64 over blocked input: the layout oneDNN's fast kernels want. */
  dnnl_dims_t xd = {8, 64, 16, 16}, wd = {64, 64, 3, 3}, strides = {1, 1}, pad = {1, 1};
  dnnl_memory_desc_t x = dt_cpu_md(4, xd, dnnl_format_tag_any);
  dnnl_memory_desc_t w = dt_cpu_md(4, wd, dnnl_format_tag_any), y = x;
  dnnl_convolution_desc_t d;
  DT_DNNL_CHECK(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training,
                                                   dnnl_convolution_direct, &x, &w, NULL, &y,
                                                   strides, pad, pad));
  dnnl_primitive_desc_t pd;
  be->act_block = 1;
  if (dnnl_primitive_desc_create(&pd, &d, NULL, be->engine, NULL) == dnnl_success) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if (md && dt_cpu_md_block(md) > 1) be->act_block = dt_cpu_md_block(md);
    DT_DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
  }
  return be->act_block;
}

static size_t cpu_layout_bytes(const dt_layout *layout) {
  return dnnl_memory_desc_get_size(&layout->md);
}

void dt_cpu_check_tensor(const dt_tensor *t, const dt_layout *expected, const char *what) {
  if (!t || !t->data) DT_FATAL("%s: missing tensor or buffer", what);
  if (t->layout != expected &&
      !(t->layout && dnnl_memory_desc_equal(&t->layout->md, &expected->md)))
    DT_FATAL("%s: tensor (%d, %d, %d, %d) does not have the layout the op was created for", what,
             t->shape.n, t->shape.c, t->shape.h, t->shape.w);
}

dnnl_memory_t dt_cpu_mem(dt_cpu_backend *be, const dnnl_memory_desc_t *md) {
  dnnl_memory_t m;
  DT_DNNL_CHECK(dnnl_memory_create(&m, md, be->engine, DNNL_MEMORY_NONE));
  return m;
}

void dt_cpu_mem_free(dnnl_memory_t *mem) {
  if (*mem) DT_DNNL_CHECK(dnnl_memory_destroy(*mem));
  *mem = NULL;
}

void dt_cpu_bind(dt_cpu_backend *be, dnnl_memory_t mem, const void *ptr) {
  /* oneDNN never writes through a memory object that is only read; the cast is its API. */
  DT_DNNL_CHECK(dnnl_memory_set_data_handle_v2(mem, (void *)ptr, be->stream));
}

/* ---- primitives ---- */

static dnnl_primitive_attr_t cpu_attr(const_dnnl_post_ops_t post_ops) {
  dnnl_primitive_attr_t attr;
  DT_DNNL_CHECK(dnnl_primitive_attr_create(&attr));
  DT_DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
  if (post_ops) DT_DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
  return attr;
}

/* Create the primitive of p->pd, count it when it is reference code (not a reorder), and
 * grow the shared scratchpad to what it needs. */
static void cpu_prim_finish(dt_cpu_backend *be, dt_cpu_prim *p) {
  DT_DNNL_CHECK(dnnl_primitive_create(&p->prim, p->pd));
  p->threads = be->base.threads;
  dnnl_primitive_kind_t kind;
  DT_DNNL_CHECK(dnnl_primitive_desc_query(p->pd, dnnl_query_primitive_kind, 0, &kind));
  p->ref_count = NULL;
  if (kind != dnnl_reorder && dt_cpu_prim_is_ref(p)) {
    p->ref_count = &be->ref_prims;
    be->ref_prims++;
  }
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0);
  size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
  p->scratch = NULL;
  if (bytes == 0) return;
  p->scratch = dt_cpu_mem(be, smd);
  if (bytes > be->scratchpad_bytes) {
    free(be->scratchpad);
    be->scratchpad = dt_xaligned(bytes);
    be->scratchpad_bytes = bytes;
  }
}

static dnnl_status_t cpu_prim_desc(dt_cpu_backend *be, dt_cpu_prim *p, const void *op_desc,
                                   const_dnnl_post_ops_t post_ops,
                                   const_dnnl_primitive_desc_t hint) {
  dnnl_primitive_attr_t attr = cpu_attr(post_ops);
  dnnl_status_t s = dnnl_primitive_desc_create(&p->pd, op_desc, attr, be->engine, hint);
  DT_DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
  p->hint = NULL;
  if (s != dnnl_success)
    p->pd = NULL;
  else if (hint)
    DT_DNNL_CHECK(dnnl_primitive_desc_clone(&p->hint, hint));
  return s;
}

void dt_cpu_prim_create(dt_cpu_backend *be, dt_cpu_prim *p, const void *op_desc,
                        const_dnnl_post_ops_t post_ops, const_dnnl_primitive_desc_t hint,
                        const char *what) {
  dnnl_status_t s = cpu_prim_desc(be, p, op_desc, post_ops, hint);
  if (s != dnnl_success) DT_FATAL("oneDNN cannot create %s: %s", what, dnnl_status2str(s));
  cpu_prim_finish(be, p);
}

bool dt_cpu_prim_try_create(dt_cpu_backend *be, dt_cpu_prim *p, const void *op_desc,
                            const_dnnl_post_ops_t post_ops, const_dnnl_primitive_desc_t hint) {
  if (cpu_prim_desc(be, p, op_desc, post_ops, hint) != dnnl_success) return false;
  cpu_prim_finish(be, p);
  return true;
}

bool dt_cpu_prim_is_ref(const dt_cpu_prim *p) {
  const char *impl = NULL;
  DT_DNNL_CHECK(dnnl_primitive_desc_query(p->pd, dnnl_query_impl_info_str, 0, &impl));
  return impl && strncmp(impl, "ref", 3) == 0;
}

void dt_cpu_prim_reorder(dt_cpu_backend *be, dt_cpu_prim *p, const dnnl_memory_desc_t *from,
                         const dnnl_memory_desc_t *to, const char *what) {
  dt_cpu_prim_reorder_sum(be, p, from, to, false, what);
}

void dt_cpu_prim_reorder_sum(dt_cpu_backend *be, dt_cpu_prim *p, const dnnl_memory_desc_t *from,
                             const dnnl_memory_desc_t *to, bool accumulate, const char *what) {
  dnnl_post_ops_t po = NULL;
  if (accumulate) {
    DT_DNNL_CHECK(dnnl_post_ops_create(&po));
    DT_DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
  }
  dnnl_primitive_attr_t attr = cpu_attr(po);
  if (po) DT_DNNL_CHECK(dnnl_post_ops_destroy(po));
  dnnl_status_t s =
      dnnl_reorder_primitive_desc_create(&p->pd, from, be->engine, to, be->engine, attr);
  DT_DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
  p->hint = NULL;
  if (s != dnnl_success)
    DT_FATAL("oneDNN cannot create the reorder of %s: %s", what, dnnl_status2str(s));
  cpu_prim_finish(be, p);
}

dnnl_memory_desc_t dt_cpu_prim_md(const dt_cpu_prim *p, dnnl_query_t what, int index) {
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(p->pd, what, index);
  if (!md) DT_FATAL("oneDNN primitive has no memory descriptor for query %d", (int)what);
  return *md;
}

/* Whether two descriptors give every argument the same memory descriptor (arguments a
 * descriptor does not have count as zero descriptors). */
static bool cpu_same_mds(const_dnnl_primitive_desc_t a, const_dnnl_primitive_desc_t b) {
  static const dnnl_query_t queries[] = {dnnl_query_src_md,          dnnl_query_diff_src_md,
                                         dnnl_query_weights_md,      dnnl_query_diff_weights_md,
                                         dnnl_query_dst_md,          dnnl_query_diff_dst_md,
                                         dnnl_query_workspace_md};
  dnnl_memory_desc_t zero;
  memset(&zero, 0, sizeof zero);
  for (size_t q = 0; q < DT_ARRAY_LEN(queries); q++)
    for (int i = 0; i < 4; i++) {
      const dnnl_memory_desc_t *x = dnnl_primitive_desc_query_md(a, queries[q], i);
      const dnnl_memory_desc_t *y = dnnl_primitive_desc_query_md(b, queries[q], i);
      if (!dnnl_memory_desc_equal(x ? x : &zero, y ? y : &zero)) return false;
    }
  return true;
}

/* Re-creates p for the backend's thread count (dt_cpu_prim_exec). */
static void cpu_prim_rethread(dt_cpu_backend *be, dt_cpu_prim *p) {
  double t0 = dt_now();
  p->threads = be->base.threads; /* also when it stays: tried once per change */
  const_dnnl_primitive_attr_t attr;
  DT_DNNL_CHECK(dnnl_primitive_desc_get_attr(p->pd, &attr));
  dnnl_primitive_kind_t kind;
  DT_DNNL_CHECK(dnnl_primitive_desc_query(p->pd, dnnl_query_primitive_kind, 0, &kind));
  dt_cpu_prim n = {0};
  dnnl_status_t s;
  if (kind == dnnl_reorder) {
    const dnnl_memory_desc_t *from = dnnl_primitive_desc_query_md(p->pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *to = dnnl_primitive_desc_query_md(p->pd, dnnl_query_dst_md, 0);
    s = dnnl_reorder_primitive_desc_create(&n.pd, from, be->engine, to, be->engine, attr);
  } else {
    const_dnnl_op_desc_t d = NULL;
    DT_DNNL_CHECK(dnnl_primitive_desc_query(p->pd, dnnl_query_op_d, 0, &d));
    s = dnnl_primitive_desc_create(&n.pd, d, attr, be->engine, p->hint);
  }
  bool swap = s == dnnl_success && cpu_same_mds(p->pd, n.pd) &&
              (dt_cpu_prim_is_ref(p) || !dt_cpu_prim_is_ref(&n));
  if (swap) {
    cpu_prim_finish(be, &n);
    n.hint = p->hint;
    p->hint = NULL;
    dt_cpu_prim_free(p);
    *p = n;
    be->base.rethread_prims++;
  } else {
    if (s == dnnl_success) DT_DNNL_CHECK(dnnl_primitive_desc_destroy(n.pd));
    be->base.rethread_kept++;
  }
  be->base.rethread_seconds += dt_now() - t0;
}

void dt_cpu_prim_exec(dt_cpu_backend *be, dt_cpu_prim *p, int nargs, const dnnl_exec_arg_t *args) {
  if (p->threads != be->base.threads) cpu_prim_rethread(be, p);
  dnnl_exec_arg_t all[13];
  if (nargs > 12) DT_FATAL("dt_cpu_prim_exec: %d arguments (at most 12)", nargs);
  memcpy(all, args, sizeof(dnnl_exec_arg_t) * (size_t)nargs);
  if (p->scratch) {
    dt_cpu_bind(be, p->scratch, be->scratchpad);
    all[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
  }
  DT_DNNL_CHECK(dnnl_primitive_execute(p->prim, be->stream, nargs, all));
  DT_DNNL_CHECK(dnnl_stream_wait(be->stream));
}

int dt_cpu_ref_prims(dt_backend *be) { return dt_cpu_be(be)->ref_prims; }

void dt_cpu_prim_free(dt_cpu_prim *p) {
  if (p->ref_count) (*p->ref_count)--;
  p->ref_count = NULL;
  if (p->prim) DT_DNNL_CHECK(dnnl_primitive_destroy(p->prim));
  if (p->pd) DT_DNNL_CHECK(dnnl_primitive_desc_destroy(p->pd));
  if (p->hint) DT_DNNL_CHECK(dnnl_primitive_desc_destroy(p->hint));
  dt_cpu_mem_free(&p->scratch);
  p->prim = NULL;
  p->pd = NULL;
  p->hint = NULL;
}

/* ---- parameter reorders ---- */

void dt_cpu_reorder_init(dt_cpu_backend *be, dt_cpu_reorder *r, const dnnl_memory_desc_t *from,
                         const dnnl_memory_desc_t *to, const char *what) {
  dt_cpu_reorder_init_sum(be, r, from, to, false, what);
}

void dt_cpu_reorder_init_sum(dt_cpu_backend *be, dt_cpu_reorder *r, const dnnl_memory_desc_t *from,
                             const dnnl_memory_desc_t *to, bool accumulate, const char *what) {
  memset(r, 0, sizeof *r);
  r->same = !accumulate && dnnl_memory_desc_equal(from, to);
  if (r->same) return;
  dt_cpu_prim_reorder_sum(be, &r->re, from, to, accumulate, what);
  r->from = dt_cpu_mem(be, from);
  r->to = dt_cpu_mem(be, to);
}

void dt_cpu_reorder_run(dt_cpu_backend *be, dt_cpu_reorder *r, const void *src, void *dst) {
  dt_cpu_bind(be, r->from, src);
  dt_cpu_bind(be, r->to, dst);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, r->from}, {DNNL_ARG_TO, r->to}};
  dt_cpu_prim_exec(be, &r->re, 2, args);
}

void dt_cpu_reorder_free(dt_cpu_reorder *r) {
  dt_cpu_prim_free(&r->re);
  dt_cpu_mem_free(&r->from);
  dt_cpu_mem_free(&r->to);
}

/* ---- ops ---- */

void dt_cpu_op_register(dt_cpu_backend *be, dt_op *op, void (*release)(dt_op *op)) {
  op->be = be;
  op->release = release;
  dt_live_ops_add(&be->live, &op->link);
}

void dt_cpu_op_free(dt_op *op) {
  if (!op) return;
  dt_cpu_backend *be = op->be;
  dt_live_ops_remove(&be->live, &op->link);
  op->release(op);
  free(op);
}

/* ---- memory ---- */

static void *cpu_alloc(dt_backend *be, size_t bytes) {
  (void)be;
  void *p = dt_xaligned(bytes);
  memset(p, 0, bytes);
  return p;
}

static void cpu_free(dt_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static void cpu_zero(dt_backend *be, void *ptr, size_t bytes) {
  (void)be;
  memset(ptr, 0, bytes);
}

static void cpu_copy(dt_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  memcpy(dst, src, bytes);
}

static dt_cpu_xfer *cpu_xfer_get(dt_cpu_backend *be, const dt_layout *layout) {
  for (dt_cpu_xfer *x = be->xfers; x; x = x->next)
    if (x->layout == layout) return x;
  const dnnl_memory_desc_t *md = &layout->md;
  if (md->ndims != 4) DT_FATAL("upload/download: layout has %d dimensions, not 4", md->ndims);
  dnnl_memory_desc_t plain = dt_cpu_md(4, md->dims, dnnl_nchw);
  dt_cpu_xfer *x = dt_xcalloc(1, sizeof *x);
  x->layout = layout;
  x->plain = dnnl_memory_desc_equal(&plain, md);
  if (!x->plain) {
    char what[96];
    snprintf(what, sizeof what, "tensor (%ld, %ld, %ld, %ld) to or from NCHW", (long)md->dims[0],
             (long)md->dims[1], (long)md->dims[2], (long)md->dims[3]);
    dt_cpu_prim_reorder(be, &x->up, &plain, md, what);
    dt_cpu_prim_reorder(be, &x->down, md, &plain, what);
    x->m_plain = dt_cpu_mem(be, &plain);
    x->m_layout = dt_cpu_mem(be, md);
  }
  x->next = be->xfers;
  be->xfers = x;
  return x;
}

static void cpu_upload(dt_backend *bep, const float *nchw_host, dt_tensor *dst) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  dt_cpu_xfer *x = cpu_xfer_get(be, dst->layout);
  if (x->plain) {
    memcpy(dst->data, nchw_host, sizeof(float) * dt_shape_count(dst->shape));
    return;
  }
  dt_cpu_bind(be, x->m_plain, nchw_host);
  dt_cpu_bind(be, x->m_layout, dst->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, x->m_plain}, {DNNL_ARG_TO, x->m_layout}};
  dt_cpu_prim_exec(be, &x->up, 2, args);
}

static void cpu_download(dt_backend *bep, const dt_tensor *src, float *nchw_host) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  dt_cpu_xfer *x = cpu_xfer_get(be, src->layout);
  if (x->plain) {
    memcpy(nchw_host, src->data, sizeof(float) * dt_shape_count(src->shape));
    return;
  }
  dt_cpu_bind(be, x->m_layout, src->data);
  dt_cpu_bind(be, x->m_plain, nchw_host);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, x->m_layout}, {DNNL_ARG_TO, x->m_plain}};
  dt_cpu_prim_exec(be, &x->down, 2, args);
}

/* ---- loss ---- */

/* Soft-target cross-entropy on plain logits (N, K): loss_i = -sum_k t_ik log_softmax(z_i)_k,
 * dlogits = (softmax(z) - t) * grad_scale. Tiny (N K values), so plain loops in double. */
static void cpu_xent(dt_backend *be, const dt_tensor *logits, const float *targets, int n, int k,
                     float grad_scale, dt_tensor *dlogits, float *losses) {
  (void)be;
  const float *z = logits->data;
  float *dz = dlogits ? dlogits->data : NULL;
  for (int i = 0; i < n; i++) {
    const float *zi = z + (size_t)i * k, *ti = targets + (size_t)i * k;
    double zmax = zi[0];
    for (int j = 1; j < k; j++) zmax = fmax(zmax, zi[j]);
    double sum = 0;
    for (int j = 0; j < k; j++) sum += exp(zi[j] - zmax);
    double lse = zmax + log(sum), loss = 0;
    for (int j = 0; j < k; j++) loss -= ti[j] * (zi[j] - lse);
    if (losses) losses[i] = (float)loss;
    if (dz)
      for (int j = 0; j < k; j++)
        dz[(size_t)i * k + j] = (float)((exp(zi[j] - lse) - ti[j]) * grad_scale);
  }
}

/* ---- precision ---- */

/* Whether oneDNN runs bf16 on real bf16 instructions here: its effective ISA (after
 * ONEDNN_MAX_CPU_ISA) is AVX-512 BF16 or AMX. Below that, oneDNN 2.6 either has no bf16
 * kernels (AVX2) or converts in software (avx512_core), slower than fp32. */
static bool cpu_isa_has_bf16(void) {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

/* The element type of activations in `precision` on this CPU: bf16 where it has bf16
 * instructions, else f32 (the precision is then emulated). fp16 is always emulated: oneDNN
 * 2.6.3 has no fp16 kernels for any CPU (its ISA levels stop at AMX, without AVX512-FP16;
 * creating an fp16 backward-weights convolution fails), and the plain-loop ops
 * (cpu_internal.h, dt_cpu_load) know f32 and bf16 only. */
static dnnl_data_type_t cpu_act_dt(dt_precision precision) {
  if (precision == DT_PRECISION_BF16 && cpu_isa_has_bf16()) return dnnl_bf16;
  return dnnl_f32;
}

bool dt_cpu_compute_line(dt_precision precision, char *buf, size_t size) {
  const char *isa = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
  if (strncmp(isa, "cpu_isa_", 8) == 0) isa += 8;
  const bool native = cpu_act_dt(precision) != dnnl_f32;
  if (precision == DT_PRECISION_FP32)
    snprintf(buf, size, "oneDNN ISA %s; fp32", isa);
  else if (native)
    snprintf(buf, size, "oneDNN ISA %s; bf16 native (16-bit activations, oneDNN bf16 kernels)",
             isa);
  else if (precision == DT_PRECISION_BF16)
    snprintf(buf, size, "oneDNN ISA %s; bf16: emulated, this CPU has no bf16 instructions", isa);
  else
    snprintf(buf, size, "oneDNN ISA %s; fp16: emulated (oneDNN has no fp16 kernels for CPUs)",
             isa);
  return native;
}

/* Native bf16 mode where the CPU has the instructions (cpu_act_dt): activations and their
 * gradients in bf16 layouts between the ops, fp32 statistics, parameters and
 * gradients. Elsewhere reduced precision is emulated (backend.h): each convolution rounds its
 * operands to bf16 or fp16 and runs the fp32 primitive, the numerics of tensor cores with fp32
 * accumulation at fp32 speed plus the rounding. Like the CUDA backend, only before any op
 * exists: an op's arithmetic is fixed when it is created, and a net must not mix the two. */
static dt_status cpu_set_precision(dt_backend *bep, dt_precision precision) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  if (dt_live_ops_any(&be->live)) DT_FATAL("set_precision after ops were created");
  if (precision != DT_PRECISION_FP32 && precision != DT_PRECISION_BF16 &&
      precision != DT_PRECISION_FP16)
    return dt_error_set(DT_ERR_CONFIG, "set_precision: unknown precision %d", (int)precision);
  be->precision = precision;
  be->act_dt = cpu_act_dt(precision);
  return DT_OK;
}

dt_status dt_cpu_set_precision_emulated(dt_backend *bep, dt_precision precision) {
  dt_status st = cpu_set_precision(bep, precision);
  dt_cpu_be(bep)->act_dt = dnnl_f32;
  return st;
}

/* ---- the backend ---- */

static void cpu_destroy(dt_backend *bep) {
  if (!bep) return;
  dt_cpu_backend *be = dt_cpu_be(bep);
  while (dt_live_ops_any(&be->live)) dt_cpu_op_free((dt_op *)be->live.head);
  for (dt_cpu_xfer *x = be->xfers, *next; x; x = next) {
    next = x->next;
    dt_cpu_prim_free(&x->up);
    dt_cpu_prim_free(&x->down);
    dt_cpu_mem_free(&x->m_plain);
    dt_cpu_mem_free(&x->m_layout);
    free(x);
  }
  for (struct dt_layout *l = be->layouts, *next; l; l = next) {
    next = l->next;
    free(l);
  }
  free(be->scratchpad);
  for (size_t i = 0; i < DT_ARRAY_LEN(be->round_buf); i++) free(be->round_buf[i]);
  DT_DNNL_CHECK(dnnl_stream_destroy(be->stream));
  DT_DNNL_CHECK(dnnl_engine_destroy(be->engine));
  free(be);
}

static void cpu_set_threads(dt_backend *bep, int threads) {
  if (threads < 1 || threads == bep->threads) return;
  omp_set_num_threads(threads); /* the element-wise loops here follow at once */
  bep->threads = threads;
}

static const dt_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .layout_plain = dt_cpu_layout_plain,
    .layout_bytes = cpu_layout_bytes,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .upload = cpu_upload,
    .download = cpu_download,
    .conv_create = dt_cpu_conv_create,
    .conv_forward = dt_cpu_conv_forward,
    .conv_backward_data = dt_cpu_conv_backward_data,
    .conv_backward_weights = dt_cpu_conv_backward_weights,
    .bn_create = dt_cpu_bn_create,
    .bn_forward_train = dt_cpu_bn_forward_train,
    .bn_forward_infer = dt_cpu_bn_forward_infer,
    .bn_backward = dt_cpu_bn_backward,
    .eltwise_create = dt_cpu_eltwise_create,
    .relu_forward = dt_cpu_relu_forward,
    .relu_backward = dt_cpu_relu_backward,
    .add = dt_cpu_add,
    .accumulate = dt_cpu_accumulate,
    .gap_create = dt_cpu_gap_create,
    .gap_forward = dt_cpu_gap_forward,
    .gap_backward = dt_cpu_gap_backward,
    .linear_create = dt_cpu_linear_create,
    .linear_forward = dt_cpu_linear_forward,
    .linear_backward = dt_cpu_linear_backward,
    .xent = cpu_xent,
    .op_free = dt_cpu_op_free,
    .pool_create = dt_cpu_pool_create,
    .pool_forward = dt_cpu_pool_forward,
    .pool_backward = dt_cpu_pool_backward,
    .concat_create = dt_cpu_concat_create,
    .concat_forward = dt_cpu_concat_forward,
    .concat_backward = dt_cpu_concat_backward,
    .pad_channels_create = dt_cpu_pad_channels_create,
    .pad_channels_forward = dt_cpu_pad_channels_forward,
    .pad_channels_backward = dt_cpu_pad_channels_backward,
    .dropout_create = dt_cpu_dropout_create,
    .dropout_forward = dt_cpu_dropout_forward,
    .dropout_backward = dt_cpu_dropout_backward,
    .sigmoid_create = dt_cpu_sigmoid_create,
    .sigmoid_forward = dt_cpu_sigmoid_forward,
    .sigmoid_backward = dt_cpu_sigmoid_backward,
    .scale_create = dt_cpu_scale_create,
    .scale_forward = dt_cpu_scale_forward,
    .scale_backward = dt_cpu_scale_backward,
    .shake_create = dt_cpu_shake_create,
    .shake_forward = dt_cpu_shake_forward,
    .shake_backward = dt_cpu_shake_backward,
    .shift_create = dt_cpu_shift_create,
    .shift_forward = dt_cpu_shift_forward,
    .shift_backward = dt_cpu_shift_backward,
    .bias_create = dt_cpu_bias_create,
    .bias_forward = dt_cpu_bias_forward,
    .bias_backward = dt_cpu_bias_backward,
    .sgd_update = dt_cpu_sgd_update,
    .lars_update = dt_cpu_lars_update,
    .adam_update = dt_cpu_adam_update,
    .copy = dt_cpu_copy,
    .axpy = dt_cpu_axpy,
    .flag_nonfinite = dt_cpu_flag_nonfinite,
    .top1 = dt_cpu_top1,
    .sq_diff_rows = dt_cpu_sq_diff_rows,
    .set_precision = cpu_set_precision,
    .set_threads = cpu_set_threads,
};

dt_backend *dt_backend_cpu_create(int threads) {
  /* oneDNN here is built on OpenMP: its thread count is OpenMP's. Set it before any
   * primitive is created, since primitives pick their blocking for the thread count. */
  if (threads > 0) omp_set_num_threads(threads);
  dt_cpu_backend *be = dt_xcalloc(1, sizeof *be);
  be->base.ops = &cpu_ops;
  be->base.host_memory = true;
  be->base.threads = threads > 0 ? threads : omp_get_max_threads();
  be->act_dt = dnnl_f32;
  /* Convolution weights in KRSC order, the CUDA backend's, only when asked (a test switch:
   * backend.h, dt_backend.weights_krsc). */
  const char *krsc = getenv("DT_WEIGHTS_KRSC");
  be->base.weights_krsc = krsc && strcmp(krsc, "1") == 0;
  DT_DNNL_CHECK(dnnl_engine_create(&be->engine, dnnl_cpu, 0));
  DT_DNNL_CHECK(dnnl_stream_create(&be->stream, be->engine, dnnl_stream_default_flags));
  return &be->base;
}

int dt_cpu_act_bytes(dt_backend *be) { return dt_cpu_be(be)->act_dt == dnnl_f32 ? 4 : 2; }

int dt_cpu_layout_elem_bytes(const dt_layout *l) {
  return l->md.data_type == dnnl_f32 ? 4 : 2;
}
