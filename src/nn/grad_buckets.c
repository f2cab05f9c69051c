/* grad_buckets.c: bucket planning for overlapped gradient all-reduce (grad_buckets.h). */
#include "nn/grad_buckets.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  size_t offset, count;
  int owner; /* the node writing its gradient, -1 if none */
} param_ref;

static int by_offset_desc(const void *a, const void *b) {
  const param_ref *x = a, *y = b;
  return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

/* Launch order: buckets ready after later nodes first (backward runs the nodes in reverse),
 * the end-of-pass ones (-1) last; among equals the higher offsets first. */
static int by_launch(const void *a, const void *b) {
  const dt_bucket *x = a, *y = b;
  const long rx = x->ready_node < 0 ? -1L : x->ready_node, ry = y->ready_node < 0 ? -1L : y->ready_node;
  if (rx != ry) return rx < ry ? 1 : -1;
  return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

void dt_grad_buckets_plan(dt_grad_buckets *b, const dt_graph *g, size_t bucket_floats) {
  memset(b, 0, sizeof *b);
  DT_CHECK(bucket_floats >= 1);
  const dt_params *ps = g->params;
  /* Owner of each parameter: the node that lists it (a parameter listed twice would get its
   * gradient from the earlier node last, so that one counts). */
  int *owner = dt_xmalloc((size_t)DT_MAX(ps->count, 1) * sizeof *owner);
  for (int i = 0; i < ps->count; i++) owner[i] = -1;
  for (int n = g->n_nodes - 1; n >= 0; n--)
    for (int k = 0; k < 4; k++)
      if (g->nodes[n].p[k] >= 0) owner[g->nodes[n].p[k]] = n;
  param_ref *refs = dt_xmalloc((size_t)DT_MAX(ps->count, 1) * sizeof *refs);
  int n_refs = 0;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if ((p->flags & DT_PARAM_BUFFER) || p->count == 0) continue;
    refs[n_refs++] = (param_ref){p->offset, p->count, owner[i]};
  }
  qsort(refs, (size_t)n_refs, sizeof *refs, by_offset_desc);
  b->buckets = dt_xmalloc((size_t)DT_MAX(n_refs, 1) * sizeof *b->buckets);
  for (int i = 0; i < n_refs;) {
    /* One bucket: parameters from the top of what is left, down to bucket_floats. Contiguous
     * because the parameters tile the arena. */
    dt_bucket bk = {refs[i].offset, 0, refs[i].owner};
    size_t top = refs[i].offset + refs[i].count;
    while (i < n_refs && (bk.count == 0 || top - refs[i].offset <= bucket_floats) &&
           refs[i].offset + refs[i].count == (bk.count ? bk.offset : top)) {
      bk.offset = refs[i].offset;
      bk.count = top - bk.offset;
      if (refs[i].owner < 0 || bk.ready_node < 0)
        bk.ready_node = -1;
      else if (refs[i].owner < bk.ready_node)
        bk.ready_node = refs[i].owner;
      i++;
    }
    b->buckets[b->n_buckets++] = bk;
  }
  qsort(b->buckets, (size_t)b->n_buckets, sizeof *b->buckets, by_launch);
  free(refs);
  free(owner);
}

void dt_grad_buckets_reset(dt_grad_buckets *b) { b->next = 0; }

const dt_bucket *dt_grad_buckets_next(dt_grad_buckets *b, int node) {
  if (b->next >= b->n_buckets) return NULL;
  const dt_bucket *bk = &b->buckets[b->next];
  if (node >= 0 && bk->ready_node != node) {
    DT_CHECK(bk->ready_node < node); /* a bucket of a later node was left behind */
    return NULL;
  }
  b->next++;
  return bk;
}

void dt_grad_buckets_free(dt_grad_buckets *b) {
  free(b->buckets);
  memset(b, 0, sizeof *b);
}
