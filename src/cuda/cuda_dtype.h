/* cuda_dtype.h: the storage precision of the CUDA backend's tensors, and when an op's 16-bit
 * copy of fp32 weights must be made again. Plain C without CUDA headers, so that these rules
 * are tested on machines without a GPU (tests/test_cuda_dtype.c).
 *
 * Storage precision is a property of a layout (cuda_internal.h struct dt_layout): with
 * train.precision = bf16 / fp16 every activation and activation gradient an op chooses the
 * layout of (convolution outputs, concatenations) is stored in 16 bits, and every op whose
 * output keeps its input's layout keeps its element type too. The plain layout of the contract
 * (layout_plain: the image batch, the logits) stays fp32. */
#ifndef DT_CUDA_DTYPE_H
#define DT_CUDA_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

/* Element type of a tensor: fp32, bfloat16 or IEEE half (the values are the kernels' too). */
typedef enum { DT_CUDA_F32 = 0, DT_CUDA_BF16 = 1, DT_CUDA_F16 = 2 } dt_cuda_dtype;

static inline size_t dt_cuda_dtype_bytes(dt_cuda_dtype t) { return t == DT_CUDA_F32 ? 4 : 2; }

static inline const char *dt_cuda_dtype_name(dt_cuda_dtype t) {
  return t == DT_CUDA_BF16 ? "bf16" : t == DT_CUDA_F16 ? "fp16" : "fp32";
}

/* The element type of a concatenation of a and b: theirs when they agree, else the
 * activations' (one of them is the fp32 plain input of a 16-bit backend). */
static inline dt_cuda_dtype dt_cuda_concat_dtype(dt_cuda_dtype a, dt_cuda_dtype b,
                                                 dt_cuda_dtype act) {
  return a == b ? a : act;
}

/* ---- an op's 16-bit copy of fp32 weights ----
 * A convolution or linear layer of a 16-bit backend reads a 16-bit copy of the caller's fp32
 * weights, made once per step instead of once per call: the backend counts every write its
 * caller may have made to weights (weights_gen: bumped by to_device, zero, free and the
 * optimizer updates, and by capture_begin, capture_end and replay, since the host cannot
 * tell what a recording ran), and an op converts again when the source pointer or that count
 * changed since its copy was made.
 * While a CUDA graph is recorded nothing runs, and the recording is replayed later with
 * whatever the weights then hold: a forward records the conversion every time, and a
 * backward records it unless a forward of the same recording (capture_seq) already did for
 * the same weights. A copy recorded that way is not valid for calls made op by op after it. */
typedef struct {
  const void *src;          /* the fp32 weights the copy was made from (NULL: none) */
  unsigned long gen;        /* weights_gen when it was made */
  bool valid;               /* it ran, op by op, at gen */
  unsigned long cap_seq;    /* the recording that last recorded a conversion (0: none) */
  const void *cap_src;      /* of these weights */
} dt_cuda_wcopy;

/* Whether the call about to read the copy (forward: a forward pass) must convert src first,
 * and the record updated as if it does. capturing and capture_seq (>= 1, one per recording)
 * are the backend's. */
static inline bool dt_cuda_wcopy_update(dt_cuda_wcopy *c, const void *src, unsigned long gen,
                                        bool capturing, unsigned long capture_seq, bool forward) {
  if (capturing) {
    const bool recorded = c->cap_seq == capture_seq && c->cap_src == src;
    c->valid = false; /* nothing runs now; op by op later must convert again */
    if (!forward && recorded) return false;
    c->cap_seq = capture_seq;
    c->cap_src = src;
    return true;
  }
  if (c->valid && c->src == src && c->gen == gen) return false;
  c->src = src;
  c->gen = gen;
  c->valid = true;
  return true;
}

/* The seam's types (backend.h is C, not C++: the kernels, compiled as CUDA C++, see only the
 * part above). */
#ifndef __cplusplus
#include "backend.h"

/* The element type of the activations a backend of this precision chooses. */
static inline dt_cuda_dtype dt_cuda_dtype_of(dt_precision p) {
  return p == DT_PRECISION_BF16 ? DT_CUDA_BF16 : p == DT_PRECISION_FP16 ? DT_CUDA_F16 : DT_CUDA_F32;
}

/* Bytes of a tensor of shape s stored with element type t (every CUDA layout is dense). */
static inline size_t dt_cuda_tensor_bytes(dt_shape s, dt_cuda_dtype t) {
  return dt_shape_count(s) * dt_cuda_dtype_bytes(t);
}
#endif

#endif
