/* async_input.c: test scaffolding, linked only into build/tools/dtrain_async_input (dtrain with
 * this file added; CMakeLists.txt). With DT_CPU_ASYNC_INPUT=1 it gives the CPU backend the
 * asynchronous-input ops of the backend seam (host_alloc, host_free, prefetch, and upload
 * taking a prefetched copy), emulated on the host. They exist so that the trainer's side of
 * the GPU input pipeline (loader peek, prefetch of the next batch while a step computes,
 * forgetting at a loader restart) runs, and is tested (tests/test_async_input.sh), on machines
 * without a GPU: a prefetch copies the batch at once, as the GPU's copy stream would read it
 * at the latest, and the upload of that pointer takes the copy. If the trainer ever let a
 * prefetched batch change before its upload, or uploaded the wrong one, the run would no
 * longer equal a plain run. At destroy it prints what it did to stderr (tests read the line).
 *
 * The binary is linked with -Wl,--wrap=dt_backend_create: every call of the factory reaches
 * __wrap_dt_backend_create below, which creates the backend through the real factory and, for
 * the CPU with DT_CPU_ASYNC_INPUT=1, replaces its ops table by a copy with these ops. No
 * production source knows of this file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_factory.h"

typedef struct {
  const float *host; /* the prefetched host memory, NULL: free */
  size_t count;      /* floats */
  float *copy;       /* its contents at prefetch time */
  size_t cap;
} async_slot;

typedef struct {
  dt_backend_ops ops;                /* this backend's table; first, so be->ops finds the state */
  const dt_backend_ops *base;        /* the plain CPU table */
  async_slot slot[2];
  int next;                          /* the slot the next prefetch takes */
  long prefetched, taken, forgotten; /* counts for the report */
  long host_buffers;                 /* host_alloc'ed and not yet freed */
} async_state;

static async_state *async_of(dt_backend *be) { return (async_state *)be->ops; }

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
  async_state *a = async_of(be);
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
  async_state *a = async_of(be);
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

/* Reports what the emulation did, then destroys the backend with its own table. */
static void async_destroy(dt_backend *be) {
  async_state *a = async_of(be);
  fprintf(stderr,
          "dtrain cpu: emulated asynchronous input: %ld batches prefetched, %ld uploaded from "
          "their copies, %ld forgotten, %ld host buffers not freed\n",
          a->prefetched, a->taken, a->forgotten, a->host_buffers);
  for (int i = 0; i < 2; i++) free(a->slot[i].copy);
  be->ops = a->base;
  free(a);
  be->ops->destroy(be);
}

dt_backend *__real_dt_backend_create(dt_device device, int threads, int local_rank,
                                     int local_size);
dt_backend *__wrap_dt_backend_create(dt_device device, int threads, int local_rank,
                                     int local_size);

dt_backend *__wrap_dt_backend_create(dt_device device, int threads, int local_rank,
                                     int local_size) {
  dt_backend *be = __real_dt_backend_create(device, threads, local_rank, local_size);
  const char *on = getenv("DT_CPU_ASYNC_INPUT");
  if (!be || device != DT_DEVICE_CPU || !on || strcmp(on, "1") != 0) return be;
  async_state *a = dt_xcalloc(1, sizeof *a);
  a->base = be->ops;
  a->ops = *be->ops;
  a->ops.host_alloc = async_host_alloc;
  a->ops.host_free = async_host_free;
  a->ops.prefetch = async_prefetch;
  a->ops.upload = async_upload;
  a->ops.destroy = async_destroy;
  be->ops = &a->ops;
  return be;
}
