/* cuda_conv.c: convolution on cuDNN's legacy convolution API (cudnnConvolutionForward,
 * BackwardData, BackwardFilter). cuDNN 9 marks these calls deprecated but still provides
 * them; this is the one file that uses them, with the deprecation warnings silenced below.
 *
 * cuDNN sees every tensor in NHWC and the filter in its NHWC order, KRSC (K, R, S, C/G). The
 * weight and gradient arenas keep convolution weights in that order (the backend's
 * weights_krsc; nn/params.h converts to and from the logical OIHW at the host boundary), so
 * in fp32 cuDNN reads the caller's weights and writes the weight gradient into the caller's
 * array directly: no copy, no transposition. An input in the plain NCHW layout (the image
 * batch) is converted into an op-owned NHWC copy, and its gradient converted back.
 *
 * Algorithms are chosen once per shape by cudnnFind*AlgorithmEx (every candidate run on
 * scratch buffers; the fastest that succeeds wins), cached in the backend for every op of the
 * same shape, and share one workspace grown to the largest need. With be->base.deterministic
 * (train.deterministic) only algorithms cuDNN reports as CUDNN_DETERMINISTIC are candidates
 * (some backward-filter and backward-data algorithms sum with atomics, in an order that
 * changes from run to run). The cache can be exported and imported (dt_cuda_algos_export /
 * _import: a checkpoint keeps the choices, so that a resumed run uses the same algorithms and
 * continues bit-exactly instead of timing again). Math: strict fp32 FMA
 * kernels (CUDNN_FMA_MATH), or TF32 tensor cores with DT_CUDA_TF32=1; the math type is set
 * per pass on the op's descriptor before each call.
 *
 * With bf16 or fp16 precision (set_precision) cuDNN runs in its bfloat16 or pseudo-half
 * configuration: x, w and y descriptors in 16 bits, fp32 accumulation (the convolution's
 * compute type), tensor cores; and the activations are 16-bit tensors (cuda_dtype.h), so
 * cuDNN reads x and dy and writes y and dx in the caller's tensors directly (an accumulating
 * forward blends into y with beta = 1, in fp32 before the rounding to 16 bits). What is
 * converted, each into a buffer of the op: the fp32 plain input of the stem (the image batch,
 * converted and transposed by forward and by backward-weights, the only passes that read it);
 * the weights, into a 16-bit copy made once per step (when cuda_dtype.h's dt_cuda_wcopy says
 * they may have changed, normally at the first forward after an optimizer update) rather than
 * per call, a conversion in the same KRSC order; and the weight gradient, which cuDNN writes
 * in 16 bits and which is converted once (no transposition) into the fp32 gradient arena
 * (rounded to 16 bits once, as under PyTorch's autocast; in fp16 a gradient beyond 65504
 * becomes infinite, which the trainer's loss scaling detects as an overflow). A shape cuDNN
 * has no 16-bit algorithm for runs in fp32 on converted copies of its activations (its fp32
 * weights as they are), with a warning. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"
#include "precision.h"

/* Workspace offered to cudnnFind*AlgorithmEx: candidates that need more are skipped. */
#define DT_CUDA_FIND_WORKSPACE ((size_t)256 << 20)

/* The three passes of a convolution. */
typedef enum { CONV_FWD, CONV_DATA, CONV_FILTER, CONV_PASSES } conv_pass;
static const char *const conv_pass_name[CONV_PASSES] = {"forward", "backward-data",
                                                        "backward-filter"};


/* The algorithms of one convolution shape: per pass, the algorithm (a cuDNN enum value), its
 * math type and workspace. */
struct dt_cuda_algo {
  dt_conv_params p;
  dt_precision prec; /* found for this configuration: fp32, or bf16 / fp16 operands */
  int algo[CONV_PASSES];
  cudnnMathType_t math[CONV_PASSES];
  size_t ws[CONV_PASSES];
  bool unchecked; /* imported: not yet checked on this device (workspace sizes unknown) */
  dt_cuda_algo *next;
};

typedef struct {
  dt_op base;
  dt_conv_params p;         /* groups >= 1 */
  int oh, ow;               /* P, Q */
  const dt_layout *x, *y;   /* (N, C, H, W) and (N, K, P, Q) */
  bool stage_x;             /* x is NCHW with C > 1 and H W > 1: cuDNN gets an NHWC copy */
  dt_precision prec;        /* fp32, or cuDNN's bf16 / fp16 configuration */
  dt_cuda_dtype ct;         /* the element type cuDNN sees (of prec) */
  dt_cuda_dtype xt, yt;     /* the element types of x (and dx), y (and dy) */
  bool x_conv;              /* x reaches cuDNN through x_k: stage_x or xt != ct */
  void *x_k;                /* (N, H, W, C) in ct: the converted x, or dx before conversion */
  void *y_k;                /* (N, P, Q, K) in ct when yt != ct: y or dy on the way */
  void *w_k, *dw_k;         /* (K, R, S, C/G) in ct when ct is 16-bit; fp32: none */
  dt_cuda_wcopy w_made;     /* 16 bits: when w_k was made (once per step) */
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  const dt_cuda_algo *algo;
} cuda_conv;

static void conv_release(dt_op *op) {
  cuda_conv *c = (cuda_conv *)op;
  dt_cuda_free(c->x_k);
  dt_cuda_free(c->y_k);
  dt_cuda_free(c->w_k);
  dt_cuda_free(c->dw_k);
  DT_CUDNN_CHECK(cudnnDestroyTensorDescriptor(c->xd));
  DT_CUDNN_CHECK(cudnnDestroyTensorDescriptor(c->yd));
  DT_CUDNN_CHECK(cudnnDestroyFilterDescriptor(c->wd));
  DT_CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(c->cd));
}

void dt_cuda_algo_cache_free(dt_cuda_backend *be) {
  for (dt_cuda_algo *a = be->algos, *next; a; a = next) {
    next = a->next;
    free(a);
  }
  be->algos = NULL;
}

static bool same_params(const dt_conv_params *a, const dt_conv_params *b) {
  return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->k == b->k &&
         a->r == b->r && a->s == b->s && a->stride == b->stride && a->pad == b->pad &&
         a->groups == b->groups && a->need_dx == b->need_dx;
}

static void conv_name(char *buf, size_t size, const dt_conv_params *p) {
  snprintf(buf, size, "x (%d, %d, %d, %d) w (%d, %d, %d, %d) stride %d pad %d groups %d", p->n,
           p->c, p->h, p->w, p->k, p->c / p->groups, p->r, p->s, p->stride, p->pad, p->groups);
}

/* 16-bit operands: the math type cuDNN timed the chosen algorithm with (it may differ from the
 * one asked), on the descriptor for the workspace query. fp32 keeps what was asked, so that
 * strict fp32 never turns into TF32. */
static void conv_adopt_math(cuda_conv *c, cudnnMathType_t timed, cudnnMathType_t *math) {
  if (c->prec == DT_PRECISION_FP32 || timed == *math) return;
  *math = timed;
  DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, timed));
}

/* A timed candidate that ran, and is deterministic when det asks for it. */
static bool conv_usable(cudnnStatus_t status, cudnnDeterminism_t determinism, bool det) {
  return status == CUDNN_STATUS_SUCCESS && (!det || determinism == CUDNN_DETERMINISTIC);
}

/* cudnnFind*AlgorithmEx for one pass under the descriptor's current math type: the fastest
 * algorithm that ran (a deterministic one when det), with its time, workspace and the math type
 * cuDNN timed it with (left on the descriptor), or -1 when none did (*status: why, when cuDNN
 * refused the search itself, as it may for a data type it has no kernels of). */
static int conv_find_pass(dt_cuda_backend *be, cuda_conv *c, conv_pass pass, bool det, float *x,
                          float *y, float *w, float *ms, size_t *ws, cudnnMathType_t *math,
                          cudnnStatus_t *status) {
  void *work = be->workspace;
  const size_t work_bytes = be->workspace_bytes;
  int got = 0;
  switch (pass) {
    case CONV_FWD: {
      cudnnConvolutionFwdAlgoPerf_t r[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      *status = cudnnFindConvolutionForwardAlgorithmEx(
          be->cudnn, c->xd, x, c->wd, w, c->cd, c->yd, y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
          r, work, work_bytes);
      if (*status != CUDNN_STATUS_SUCCESS) return -1;
      for (int i = 0; i < got; i++)
        if (conv_usable(r[i].status, r[i].determinism, det)) {
          *ms = r[i].time;
          conv_adopt_math(c, r[i].mathType, math);
          DT_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(be->cudnn, c->xd, c->wd, c->cd,
                                                                 c->yd, r[i].algo, ws));
          return (int)r[i].algo;
        }
      return -1;
    }
    case CONV_DATA: {
      cudnnConvolutionBwdDataAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      *status = cudnnFindConvolutionBackwardDataAlgorithmEx(
          be->cudnn, c->wd, w, c->yd, y, c->cd, c->xd, x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
          &got, r, work, work_bytes);
      if (*status != CUDNN_STATUS_SUCCESS) return -1;
      for (int i = 0; i < got; i++)
        if (conv_usable(r[i].status, r[i].determinism, det)) {
          *ms = r[i].time;
          conv_adopt_math(c, r[i].mathType, math);
          DT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(be->cudnn, c->wd, c->yd,
                                                                      c->cd, c->xd, r[i].algo, ws));
          return (int)r[i].algo;
        }
      return -1;
    }
    case CONV_FILTER:
    default: {
      cudnnConvolutionBwdFilterAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      *status = cudnnFindConvolutionBackwardFilterAlgorithmEx(
          be->cudnn, c->xd, x, c->yd, y, c->cd, c->wd, w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
          &got, r, work, work_bytes);
      if (*status != CUDNN_STATUS_SUCCESS) return -1;
      for (int i = 0; i < got; i++)
        if (conv_usable(r[i].status, r[i].determinism, det)) {
          *ms = r[i].time;
          conv_adopt_math(c, r[i].mathType, math);
          DT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
              be->cudnn, c->xd, c->yd, c->cd, c->wd, r[i].algo, ws));
          return (int)r[i].algo;
        }
      return -1;
    }
  }
}

/* The math type a search starts from: 16-bit operands need CUDNN_TENSOR_OP_MATH for tensor
 * cores (cuDNN's default math leaves bf16 / fp16 convolutions on slow non-tensor-core
 * kernels: the H200 run of device_check.sh measured bf16 at 0.18x of fp32); fp32 is strict
 * FMA unless TF32 is allowed. */
static cudnnMathType_t conv_math_type(const dt_cuda_backend *be, const cuda_conv *c) {
  if (c->prec != DT_PRECISION_FP32) return CUDNN_TENSOR_OP_MATH;
  return be->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

/* Run every algorithm of each pass once on scratch buffers and keep the fastest that works,
 * in strict fp32 (FMA) math unless TF32 is allowed (or in bf16). A pass with no strict-fp32
 * algorithm falls back to cuDNN's default math (TF32 on Ampere and newer) with a warning; one
 * with no algorithm at all is fatal, naming the shape, or with may_fail returns NULL. */
static dt_cuda_algo *conv_find(dt_cuda_backend *be, cuda_conv *c, bool may_fail) {
  const dt_conv_params *p = &c->p;
  char name[160];
  conv_name(name, sizeof name, p);
  const size_t xb = (size_t)p->n * p->c * p->h * p->w * sizeof(float);
  const size_t yb = (size_t)p->n * p->k * c->oh * c->ow * sizeof(float);
  const size_t wb = (size_t)p->k * (p->c / p->groups) * p->r * p->s * sizeof(float);
  float *x = dt_cuda_malloc(xb), *y = dt_cuda_malloc(yb), *w = dt_cuda_malloc(wb);
  dt_cuda_workspace_reserve(be, DT_CUDA_FIND_WORKSPACE);

  dt_cuda_algo *a = dt_xcalloc(1, sizeof *a);
  a->p = *p;
  a->prec = c->prec;
  float ms[CONV_PASSES] = {0};
  for (int pass = 0; pass < CONV_PASSES; pass++) {
    a->algo[pass] = -1;
    if (pass == CONV_DATA && !p->need_dx) continue;
    const cudnnMathType_t asked = conv_math_type(be, c);
    cudnnMathType_t math = asked;
    DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, math));
    cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
    bool det = be->base.deterministic;
    int algo = conv_find_pass(be, c, (conv_pass)pass, det, x, y, w, &ms[pass], &a->ws[pass],
                              &math, &status);
    if (algo < 0 && det) {
      det = false;
      DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, math));
      algo = conv_find_pass(be, c, (conv_pass)pass, det, x, y, w, &ms[pass], &a->ws[pass], &math,
                            &status);
      if (algo >= 0)
        fprintf(stderr,
                "dtrain cuda: warning: no deterministic %s algorithm for the convolution %s; "
                "using a non-deterministic one (train.deterministic cannot hold for it)\n",
                conv_pass_name[pass], name);
    }
    if (algo < 0 && asked == CUDNN_FMA_MATH) {
      math = CUDNN_DEFAULT_MATH;
      DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, math));
      algo = conv_find_pass(be, c, (conv_pass)pass, det, x, y, w, &ms[pass], &a->ws[pass], &math,
                            &status);
      if (algo >= 0)
        fprintf(stderr,
                "dtrain cuda: warning: no strict-fp32 %s algorithm for the convolution %s; "
                "using cuDNN's default math (TF32 on Ampere and newer)\n",
                conv_pass_name[pass], name);
    }
    if (algo < 0 && may_fail) {
      dt_cuda_free(x);
      dt_cuda_free(y);
      dt_cuda_free(w);
      free(a);
      return NULL;
    }
    if (algo < 0)
      DT_FATAL("cuDNN has no %s algorithm for the %s convolution %s (%s)", conv_pass_name[pass],
               dt_precision_name(c->prec), name,
               status == CUDNN_STATUS_SUCCESS ? "every candidate failed"
                                              : cudnnGetErrorString(status));
    a->algo[pass] = algo;
    a->math[pass] = math;
  }
  if (be->verbose)
    fprintf(stderr,
            "dtrain cuda: conv %s: forward algo %d (%.3f ms, %zu B), backward data algo %d "
            "(%.3f ms, %zu B), backward filter algo %d (%.3f ms, %zu B)%s\n",
            name, a->algo[CONV_FWD], ms[CONV_FWD], a->ws[CONV_FWD], a->algo[CONV_DATA],
            ms[CONV_DATA], a->ws[CONV_DATA], a->algo[CONV_FILTER], ms[CONV_FILTER],
            a->ws[CONV_FILTER], c->prec == DT_PRECISION_BF16   ? ", bf16"
                                : c->prec == DT_PRECISION_FP16 ? ", fp16"
                                : be->tf32                     ? ", TF32 allowed"
                                                               : "");
  dt_cuda_free(x);
  dt_cuda_free(y);
  dt_cuda_free(w);
  a->next = be->algos;
  be->algos = a;
  return a;
}

/* Set the math type chosen for one pass on the shared descriptor. */
static void conv_math(cuda_conv *c, conv_pass pass) {
  DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, c->algo->math[pass]));
}

/* The op's descriptors for its precision (c->prec): NHWC tensors, KRSC filter, fp32
 * accumulation. */
static void conv_describe(dt_cuda_backend *be, cuda_conv *c) {
  const dt_conv_params *p = &c->p;
  const cudnnDataType_t dtype = c->prec == DT_PRECISION_BF16   ? CUDNN_DATA_BFLOAT16
                                : c->prec == DT_PRECISION_FP16 ? CUDNN_DATA_HALF
                                                               : CUDNN_DATA_FLOAT;
  DT_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NHWC, dtype, p->n, p->c, p->h, p->w));
  DT_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NHWC, dtype, p->n, p->k, c->oh, c->ow));
  DT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(c->wd, dtype, CUDNN_TENSOR_NHWC, p->k,
                                            p->c / p->groups, p->r, p->s));
  DT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(c->cd, p->pad, p->pad, p->stride, p->stride, 1,
                                                 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  DT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(c->cd, p->groups));
  DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, conv_math_type(be, c)));
  int dn, dc, dh, dw;
  DT_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(c->cd, c->xd, c->wd, &dn, &dc, &dh, &dw));
  if (dn != p->n || dc != p->k || dh != c->oh || dw != c->ow)
    DT_FATAL("conv_create: cuDNN computes output (%d, %d, %d, %d), expected (%d, %d, %d, %d)", dn,
             dc, dh, dw, p->n, p->k, c->oh, c->ow);
}

/* The workspace of an imported algorithm on this device for the op's descriptors, or false
 * when cuDNN cannot run it here (another GPU or cuDNN than the one that chose it). */
static bool conv_check_pass(dt_cuda_backend *be, cuda_conv *c, conv_pass pass, int algo,
                            cudnnMathType_t math, size_t *ws) {
  if (cudnnSetConvolutionMathType(c->cd, math) != CUDNN_STATUS_SUCCESS) return false;
  cudnnStatus_t st;
  switch (pass) {
    case CONV_FWD:
      st = cudnnGetConvolutionForwardWorkspaceSize(be->cudnn, c->xd, c->wd, c->cd, c->yd,
                                                   (cudnnConvolutionFwdAlgo_t)algo, ws);
      break;
    case CONV_DATA:
      st = cudnnGetConvolutionBackwardDataWorkspaceSize(be->cudnn, c->wd, c->yd, c->cd, c->xd,
                                                        (cudnnConvolutionBwdDataAlgo_t)algo, ws);
      break;
    case CONV_FILTER:
    default:
      st = cudnnGetConvolutionBackwardFilterWorkspaceSize(
          be->cudnn, c->xd, c->yd, c->cd, c->wd, (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
      break;
  }
  return st == CUDNN_STATUS_SUCCESS;
}

/* Algorithms already found (or imported) for this shape and precision, or NULL. An imported
 * entry is checked on first use; one this device cannot run is dropped with a warning. */
static const dt_cuda_algo *conv_cached(dt_cuda_backend *be, cuda_conv *c) {
  for (dt_cuda_algo **link = &be->algos; *link; link = &(*link)->next) {
    dt_cuda_algo *a = *link;
    if (a->prec != c->prec || !same_params(&a->p, &c->p)) continue;
    if (!a->unchecked) return a;
    bool ok = true;
    for (int pass = 0; pass < CONV_PASSES && ok; pass++)
      if (a->algo[pass] >= 0)
        ok = conv_check_pass(be, c, (conv_pass)pass, a->algo[pass], a->math[pass], &a->ws[pass]);
    DT_CUDNN_CHECK(cudnnSetConvolutionMathType(c->cd, conv_math_type(be, c)));
    if (ok) {
      a->unchecked = false;
      return a;
    }
    char name[160];
    conv_name(name, sizeof name, &c->p);
    fprintf(stderr, "dtrain cuda: warning: the checkpoint's algorithms for the convolution %s "
                    "do not run on this GPU; timing them again (a resumed run may then differ "
                    "in rounding)\n", name);
    *link = a->next;
    free(a);
    return NULL;
  }
  return NULL;
}

/* Row layout of export / import: the shape (11), precision, algorithm and math per pass. */
size_t dt_cuda_algos_export(dt_backend *bep, int32_t *rows, size_t max_rows) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  size_t n = 0;
  for (const dt_cuda_algo *a = be->algos; a; a = a->next, n++) {
    if (!rows || n >= max_rows) continue;
    const dt_conv_params *p = &a->p;
    const int32_t row[DT_BACKEND_ALGO_COLS] = {
        p->n, p->c, p->h, p->w, p->k, p->r, p->s, p->stride, p->pad, p->groups, p->need_dx,
        (int32_t)a->prec, a->algo[0], a->algo[1], a->algo[2], (int32_t)a->math[0],
        (int32_t)a->math[1], (int32_t)a->math[2]};
    memcpy(rows + n * DT_BACKEND_ALGO_COLS, row, sizeof row);
  }
  return n;
}

void dt_cuda_algos_import(dt_backend *bep, const int32_t *rows, size_t n_rows) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (dt_live_ops_any(&be->live)) DT_FATAL("algos_import after ops were created");
  size_t bad = 0;
  for (size_t i = 0; i < n_rows; i++) {
    const int32_t *r = rows + i * DT_BACKEND_ALGO_COLS;
    bool ok = r[10] == 0 || r[10] == 1;
    for (int j = 0; j < 10; j++) ok = ok && r[j] >= (j == 8 ? 0 : 1);
    ok = ok && r[11] >= DT_PRECISION_FP32 && r[11] <= DT_PRECISION_FP16;
    ok = ok && r[12] >= 0 && r[12] < CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    ok = ok && r[13] >= (r[10] ? 0 : -1) && r[13] < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
    ok = ok && r[14] >= 0 && r[14] < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
    for (int j = 15; j < 18; j++) ok = ok && r[j] >= 0 && r[j] <= CUDNN_FMA_MATH;
    if (!ok) {
      bad++;
      continue;
    }
    dt_cuda_algo *a = dt_xcalloc(1, sizeof *a);
    a->p = (dt_conv_params){.n = r[0], .c = r[1], .h = r[2], .w = r[3], .k = r[4], .r = r[5],
                            .s = r[6], .stride = r[7], .pad = r[8], .groups = r[9],
                            .need_dx = r[10] != 0};
    a->prec = (dt_precision)r[11];
    for (int pass = 0; pass < CONV_PASSES; pass++) {
      a->algo[pass] = r[12 + pass];
      a->math[pass] = (cudnnMathType_t)r[15 + pass];
    }
    a->unchecked = true;
    a->next = be->algos;
    be->algos = a;
  }
  if (bad)
    fprintf(stderr, "dtrain cuda: warning: %zu of %zu stored convolution algorithm choices are "
                    "out of range and were ignored\n", bad, n_rows);
}

dt_op *dt_cuda_conv_create(dt_backend *bep, const dt_conv_params *p, const dt_layout *x,
                           const dt_layout **y) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  const int g = p->groups > 0 ? p->groups : 1;
  if (p->c % g || p->k % g || p->stride < 1 || p->pad < 0 || p->r < 1 || p->s < 1)
    DT_FATAL("conv_create: bad parameters (C %d, K %d, groups %d, stride %d, pad %d)", p->c, p->k,
             g, p->stride, p->pad);
  const int oh = (p->h + 2 * p->pad - p->r) / p->stride + 1;
  const int ow = (p->w + 2 * p->pad - p->s) / p->stride + 1;
  if (oh < 1 || ow < 1) DT_FATAL("conv_create: empty output for input %dx%d", p->h, p->w);
  if (x->shape.n != p->n || x->shape.c != p->c || x->shape.h != p->h || x->shape.w != p->w)
    DT_FATAL("conv_create: input layout does not match (%d, %d, %d, %d)", p->n, p->c, p->h, p->w);

  cuda_conv *c = dt_xcalloc(1, sizeof *c);
  dt_cuda_op_register(be, &c->base, conv_release);
  c->p = *p;
  c->p.groups = g;
  c->oh = oh;
  c->ow = ow;
  c->x = x;
  /* The output is NHWC (the plain layout where C = 1 or H W = 1: the same bytes). A caller's
   * requested layout (a residual's, to add into) is kept as given when it is that layout, and
   * refused otherwise: never a silently different one. */
  const dt_shape ys = {p->n, p->k, oh, ow};
  c->y = dt_cuda_layout(be, ys, DT_CUDA_NHWC, be->act);
  if (*y) {
    const dt_layout *want = *y;
    if (want->shape.n != ys.n || want->shape.c != ys.c || want->shape.h != ys.h ||
        want->shape.w != ys.w)
      DT_FATAL("conv_create: the requested output layout (%d, %d, %d, %d) does not have the "
               "output shape (%d, %d, %d, %d)", want->shape.n, want->shape.c, want->shape.h,
               want->shape.w, ys.n, ys.c, ys.h, ys.w);
    if (want->format != c->y->format)
      DT_FATAL("conv_create: the requested output layout of (%d, %d, %d, %d) is plain NCHW; "
               "the CUDA backend's convolutions write NHWC", ys.n, ys.c, ys.h, ys.w);
    c->y = want; /* of any element type: y_k converts when it is not cuDNN's */
  }
  c->stage_x = x->format == DT_CUDA_NCHW && p->c > 1 && p->h * p->w > 1;
  c->xt = dt_cuda_dt(x);
  c->yt = dt_cuda_dt(c->y);
  DT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&c->xd));
  DT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&c->yd));
  DT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&c->wd));
  DT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c->cd));
  /* 16 bits where the backend asks for it and cuDNN has algorithms for the shape (a shape
   * without, such as an odd stem, stays fp32 with a warning). */
  c->prec = be->precision;
  conv_describe(be, c);
  c->algo = conv_cached(be, c);
  if (!c->algo) c->algo = conv_find(be, c, c->prec != DT_PRECISION_FP32);
  if (!c->algo) {
    char name[160];
    conv_name(name, sizeof name, p);
    fprintf(stderr, "dtrain cuda: warning: cuDNN has no %s algorithm for the convolution %s; "
                    "it runs in fp32 on converted copies of its operands\n",
            dt_precision_name(c->prec), name);
    c->prec = DT_PRECISION_FP32;
    conv_describe(be, c);
    c->algo = conv_cached(be, c);
    if (!c->algo) c->algo = conv_find(be, c, false);
  }
  const size_t wcount = (size_t)p->k * (p->c / g) * p->r * p->s;
  const size_t xcount = (size_t)p->n * p->c * p->h * p->w, ycount = (size_t)p->n * p->k * oh * ow;
  c->ct = dt_cuda_dtype_of(c->prec);
  const size_t ct_bytes = dt_cuda_dtype_bytes(c->ct);
  c->x_conv = c->stage_x || c->xt != c->ct;
  if (c->x_conv) c->x_k = dt_cuda_malloc(xcount * ct_bytes);
  if (c->yt != c->ct) c->y_k = dt_cuda_malloc(ycount * ct_bytes);
  if (c->ct != DT_CUDA_F32) {
    c->w_k = dt_cuda_malloc(wcount * ct_bytes);
    c->dw_k = dt_cuda_malloc(wcount * ct_bytes);
  }
  size_t ws = 0;
  for (int pass = 0; pass < CONV_PASSES; pass++)
    if (c->algo->ws[pass] > ws) ws = c->algo->ws[pass];
  dt_cuda_workspace_reserve(be, ws);
  *y = c->y;
  return &c->base;
}

/* dst (n, ch, hw) of element type dt = src of element type st (or dst += src), each NCHW or
 * NHWC: the fp32 transpositions of old where they suffice, so that the fp32 path runs the
 * kernels it always ran. */
static void conv_convert(cuda_conv *c, const void *src, dt_cuda_dtype st, bool src_nchw,
                         void *dst, dt_cuda_dtype dt, bool dst_nchw, int n, int ch, int hw,
                         bool accumulate) {
  cudaStream_t stream = c->base.be->stream;
  if (st == DT_CUDA_F32 && dt == DT_CUDA_F32 && !accumulate && src_nchw && !dst_nchw)
    DT_CUDA_CHECK(dt_k_nchw_to_nhwc(src, dst, n, ch, hw, stream));
  else if (st == DT_CUDA_F32 && dt == DT_CUDA_F32 && !accumulate && !src_nchw && dst_nchw)
    DT_CUDA_CHECK(dt_k_nhwc_to_nchw(src, dst, n, ch, hw, stream));
  else
    DT_CUDA_CHECK(dt_k_convert(src, st, src_nchw, dst, dt, dst_nchw, n, ch, hw, accumulate,
                               stream));
}

/* The NHWC input cuDNN reads: x itself, or the op's converted copy. */
static const void *conv_x(cuda_conv *c, const dt_tensor *x) {
  if (!c->x_conv) return x->data;
  conv_convert(c, x->data, c->xt, c->stage_x, c->x_k, c->ct, false, c->p.n, c->p.c,
               c->p.h * c->p.w, false);
  return c->x_k;
}

/* The dy cuDNN reads: dy itself, or its copy in cuDNN's element type. */
static const void *conv_dy(cuda_conv *c, const dt_tensor *dy) {
  if (!c->y_k) return dy->data;
  conv_convert(c, dy->data, c->yt, false, c->y_k, c->ct, false, c->p.n, c->p.k, c->oh * c->ow,
               false);
  return c->y_k;
}

/* The KRSC weights cuDNN reads: w itself in fp32 (the arena is KRSC), or the op's 16-bit copy,
 * converted (not transposed) when cuda_dtype.h's dt_cuda_wcopy says so (forward: a forward
 * pass). */
static const void *conv_w(cuda_conv *c, const float *w, bool forward) {
  if (!c->w_k) return w;
  if (dt_cuda_wcopy_needed(c->base.be, &c->w_made, w, forward))
    conv_convert(c, w, DT_CUDA_F32, false, c->w_k, c->ct, false, c->p.k, c->p.c / c->p.groups,
                 c->p.r * c->p.s, false);
  return c->w_k;
}

void dt_cuda_conv_forward(dt_op *op, const dt_tensor *x, const float *w, dt_tensor *y,
                          bool accumulate) {
  cuda_conv *c = (cuda_conv *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, c->x, "conv_forward x");
  dt_cuda_check_tensor(y, c->y, "conv_forward y");
  const float one = 1.0f, beta = accumulate && !c->y_k ? 1.0f : 0.0f;
  const void *xk = conv_x(c, x), *wk = conv_w(c, w, true);
  void *yk = c->y_k ? c->y_k : y->data;
  conv_math(c, CONV_FWD);
  DT_CUDNN_CHECK(cudnnConvolutionForward(be->cudnn, &one, c->xd, xk, c->wd, wk, c->cd,
                                         (cudnnConvolutionFwdAlgo_t)c->algo->algo[CONV_FWD],
                                         be->workspace, c->algo->ws[CONV_FWD], &beta, c->yd,
                                         yk));
  if (c->y_k)
    conv_convert(c, c->y_k, c->ct, false, y->data, c->yt, false, c->p.n, c->p.k, c->oh * c->ow,
                 accumulate);
  dt_cuda_op_done(be, false);
}

void dt_cuda_conv_backward_data(dt_op *op, const dt_tensor *dy, const float *w, dt_tensor *dx) {
  cuda_conv *c = (cuda_conv *)op;
  dt_cuda_backend *be = op->be;
  if (!c->p.need_dx) DT_FATAL("conv_backward_data on a convolution created without need_dx");
  dt_cuda_check_tensor(dy, c->y, "conv_backward_data dy");
  dt_cuda_check_tensor(dx, c->x, "conv_backward_data dx");
  const float one = 1.0f, zero = 0.0f;
  const void *dyk = conv_dy(c, dy), *wk = conv_w(c, w, false);
  void *dxk = c->x_conv ? c->x_k : dx->data;
  conv_math(c, CONV_DATA);
  DT_CUDNN_CHECK(cudnnConvolutionBackwardData(
      be->cudnn, &one, c->wd, wk, c->yd, dyk, c->cd,
      (cudnnConvolutionBwdDataAlgo_t)c->algo->algo[CONV_DATA], be->workspace,
      c->algo->ws[CONV_DATA], &zero, c->xd, dxk));
  if (c->x_conv)
    conv_convert(c, c->x_k, c->ct, false, dx->data, c->xt, c->stage_x, c->p.n, c->p.c,
                 c->p.h * c->p.w, false);
  dt_cuda_op_done(be, false);
}

void dt_cuda_conv_backward_weights(dt_op *op, const dt_tensor *x, const dt_tensor *dy,
                                   float *dw) {
  cuda_conv *c = (cuda_conv *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, c->x, "conv_backward_weights x");
  dt_cuda_check_tensor(dy, c->y, "conv_backward_weights dy");
  const float one = 1.0f, zero = 0.0f;
  const void *xk = conv_x(c, x), *dyk = conv_dy(c, dy);
  void *dwk = c->dw_k ? c->dw_k : dw;
  conv_math(c, CONV_FILTER);
  DT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
      be->cudnn, &one, c->xd, xk, c->yd, dyk, c->cd,
      (cudnnConvolutionBwdFilterAlgo_t)c->algo->algo[CONV_FILTER], be->workspace,
      c->algo->ws[CONV_FILTER], &zero, c->wd, dwk));
  if (c->dw_k)
    conv_convert(c, c->dw_k, c->ct, false, dw, DT_CUDA_F32, false, c->p.k, c->p.c / c->p.groups,
                 c->p.r * c->p.s, false);
  dt_cuda_op_done(be, false);
}

#pragma GCC diagnostic pop
