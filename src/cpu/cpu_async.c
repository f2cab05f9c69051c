/* cpu_async.c: the asynchronous-input ops of the backend seam (host_alloc, host_free,
 * prefetch, and upload taking a prefetched copy) emulated on the CPU backend, switched on by
 * the environment variable DT_CPU_ASYNC_INPUT=1. They exist so that the trainer's side of
 * the GPU input pipeline (loader peek, prefetch of the next batch while a step computes,
 * forgetting at a loader restart) runs, and is tested, on machines without a GPU: a prefetch
 * copies the batch at once, as the GPU's copy stream would read it at the latest, and the
 * upload of that pointer takes the copy. If the trainer ever let a prefetched batch change
 * before its upload, or uploaded the wrong one, the run would no longer equal a plain run.
 * At destroy it prints what it did to stderr (tests read the line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

typedef struct {
  const float *host; /* the prefetched host memory, NULL: free */
  size_t count;      /* floats */
  float *copy;       /* its contents at prefetch time */
  size_t cap;
} async_slot;

struct dt_cpu_async {
  dt_backend_ops ops;                /* this backend's table */
  const dt_backend_ops *base;        /* the plain CPU table */
  async_slot slot[2];
  int next;                          /* the slot the next prefetch takes */
  long prefetched, taken, forgotten; /* counts for the report */
  long host_buffers;                 /* host_alloc'ed and not yet freed */
};

static struct dt_cpu_async *async_of(dt_backend *be) { return dt_cpu_be(be)->async; }

static void *async_host_alloc(dt_backend *be, size_t bytes) {
  async_of(be)->host_buffers++;
  return dt_xaligned(bytes ? bytes : 1);
}

static void async_host_free(dt_backend *be, void *ptr) {
  if (!ptr) return;
  async_of(be)->host_buffers--;
  free(ptr);
}

static void async_prefetch(dt_backend *be, const float *host, size_t count) {
  struct dt_cpu_async *a = async_of(be);
  if (!host) {
    for (int i = 0; i < 2; i++) {
      a->forgotten += a->slot[i].host != NULL;
      a->slot[i].host = NULL;
    }
    return;
  }
  for (int i = 0; i < 2; i++)
    if (a->slot[i].host == host && a->slot[i].count == count) return;
  async_slot *s = &a->slot[a->next];
  a->next ^= 1;
  if (s->host) a->forgotten++; /* replaced before its upload */
  if (s->cap < count) {
    free(s->copy);
    s->copy = dt_xaligned(count * sizeof(float));
    s->cap = count;
  }
  memcpy(s->copy, host, count * sizeof(float));
  s->host = host;
  s->count = count;
  a->prefetched++;
}

static void async_upload(dt_backend *be, const float *nchw_host, dt_tensor *dst) {
  struct dt_cpu_async *a = async_of(be);
  const size_t count = dt_shape_count(dst->shape);
  for (int i = 0; i < 2; i++) {
    async_slot *s = &a->slot[i];
    if (s->host == nchw_host && s->count == count) {
      a->base->upload(be, s->copy, dst);
      s->host = NULL;
      a->taken++;
      return;
    }
  }
  a->base->upload(be, nchw_host, dst);
}

const dt_backend_ops *dt_cpu_async_ops(dt_cpu_backend *be, const dt_backend_ops *base) {
  struct dt_cpu_async *a = dt_xcalloc(1, sizeof *a);
  a->base = base;
  a->ops = *base;
  a->ops.host_alloc = async_host_alloc;
  a->ops.host_free = async_host_free;
  a->ops.prefetch = async_prefetch;
  a->ops.upload = async_upload;
  be->async = a;
  return &a->ops;
}

void dt_cpu_async_free(dt_cpu_backend *be) {
  struct dt_cpu_async *a = be->async;
  if (!a) return;
  fprintf(stderr,
          "dtrain cpu: emulated asynchronous input: %ld batches prefetched, %ld uploaded from "
          "their copies, %ld forgotten, %ld host buffers not freed\n",
          a->prefetched, a->taken, a->forgotten, a->host_buffers);
  for (int i = 0; i < 2; i++) free(a->slot[i].copy);
  free(a);
  be->async = NULL;
}
