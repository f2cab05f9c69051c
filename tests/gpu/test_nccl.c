/* test_nccl.c: the device collectives of comm/comm.h (comm/comm_nccl.c) against closed forms.
 *
 * Rank r of n contributes small integers scaled by r + 1, so every sum is n (n + 1) / 2 times
 * a known integer and exact in fp32; results are compared bit for bit. Covered: sizes 1, 7 and
 * 1000003 in one call each; one buffer cut into many buckets of odd sizes, each all-reduced
 * with its own call before one join (and a count-0 call); the statistics; and ordering, both
 * ways: each bucket's new data is copied in on the compute stream (behind a large copy that
 * keeps that stream busy) just before its all-reduce, which must see it, and after the join a
 * copy on the compute stream must see the sums. The int32 maximum (a step's non-finite flag),
 * read back after a join and the bounded dt_comm_nccl_wait.
 *
 * Works with one process (no mpirun) and with n ranks on n GPUs (mpirun -np n, one GPU per
 * local rank). With one rank NCCL may move no data for an in-place sum, so the ordering checks
 * can only fail with two ranks or more. Every rank makes the same collective calls whatever
 * its data, and checks only after them, so that a failed check never leaves a peer waiting.
 *
 * Exits 77 (ctest: skipped) when this build has no CUDA backend or there is no usable GPU,
 * after checking that dt_comm_nccl_create then returns NULL with a message. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "backend.h"
#include "backend_factory.h"
#include "comm/comm.h"
#include "common.h"

static dt_comm *g_comm;
static dt_backend *g_be;
static dt_comm_nccl *g_nc;
static int g_rank, g_size;

/* n (n + 1) / 2: the sum of r + 1 over the ranks. */
static float rank_sum(void) { return (float)g_size * (float)(g_size + 1) / 2.0f; }

/* Rank r's value at element i of pattern `seed`: (r + 1) * (small integer). */
static float value(int rank, size_t i, unsigned seed) {
  return (float)(rank + 1) * (float)((i * 7 + seed) % 13 + 1);
}

/* Elements of `got` that differ from the closed-form sum of pattern `seed` at offset `first`,
 * printing the first few. */
static size_t mismatches(const float *got, size_t count, size_t first, unsigned seed,
                         const char *what) {
  size_t bad = 0;
  for (size_t i = 0; i < count; i++) {
    const float want = rank_sum() * (float)(((first + i) * 7 + seed) % 13 + 1);
    if (got[i] != want && bad++ < 5)
      print_message("  rank %d, %s: element %zu is %g, want %g\n", g_rank, what, first + i,
                    (double)got[i], (double)want);
  }
  return bad;
}

static float *host_pattern(size_t count, size_t first, unsigned seed) {
  float *h = dt_xmalloc(count * sizeof *h);
  for (size_t i = 0; i < count; i++) h[i] = value(g_rank, first + i, seed);
  return h;
}

static void *stream(void) { return g_be->ops->native_stream(g_be); }

/* One call per buffer, for a single element, a short odd length and a length past 2^20. */
static void test_sizes(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 7, 1000003};
  for (size_t s = 0; s < DT_ARRAY_LEN(sizes); s++) {
    const size_t n = sizes[s];
    float *h = host_pattern(n, 0, (unsigned)s);
    float *d = g_be->ops->alloc(g_be, n * sizeof(float));
    g_be->ops->to_device(g_be, d, h, n * sizeof(float));
    dt_comm_nccl_allreduce_async(g_nc, d, n, stream());
    dt_comm_nccl_join(g_nc, stream());
    memset(h, 0, n * sizeof(float));
    g_be->ops->to_host(g_be, h, d, n * sizeof(float));
    g_be->ops->free(g_be, d);
    char what[64];
    snprintf(what, sizeof what, "size %zu", n);
    const size_t bad = mismatches(h, n, 0, (unsigned)s, what);
    free(h);
    assert_int_equal(bad, 0);
  }
}

/* Bucket b has 2 b^2 + 1 elements, 0 <= b < BUCKETS: odd sizes from 1 to 2 * 47^2 + 1. */
enum { BUCKETS = 48 };
static size_t bucket_size(int b) { return 2 * (size_t)b * (size_t)b + 1; }
static size_t bucket_total(void) {
  size_t total = 0;
  for (int b = 0; b < BUCKETS; b++) total += bucket_size(b);
  return total;
}

/* One buffer, many sub-range all-reduces, one join; the statistics count them. */
static void test_buckets(void **state) {
  (void)state;
  const size_t total = bucket_total();
  const size_t calls0 = dt_comm_nccl_allreduce_count(g_nc);
  const size_t bytes0 = dt_comm_nccl_allreduce_bytes(g_nc);
  float *h = host_pattern(total, 0, 5);
  float *d = g_be->ops->alloc(g_be, total * sizeof(float));
  g_be->ops->to_device(g_be, d, h, total * sizeof(float));
  /* Backward order: the last bucket first. */
  size_t off = total;
  for (int b = BUCKETS - 1; b >= 0; b--) {
    off -= bucket_size(b);
    dt_comm_nccl_allreduce_async(g_nc, d + off, bucket_size(b), stream());
  }
  dt_comm_nccl_allreduce_async(g_nc, d, 0, stream()); /* nothing to do */
  dt_comm_nccl_join(g_nc, stream());
  memset(h, 0, total * sizeof(float));
  g_be->ops->to_host(g_be, h, d, total * sizeof(float));
  g_be->ops->free(g_be, d);
  const size_t bad = mismatches(h, total, 0, 5, "buckets");
  free(h);
  assert_int_equal(off, 0);
  assert_int_equal(bad, 0);
  assert_int_equal(dt_comm_nccl_allreduce_count(g_nc) - calls0, BUCKETS);
  assert_int_equal(dt_comm_nccl_allreduce_bytes(g_nc) - bytes0, total * sizeof(float));
  assert_true(dt_comm_nccl_host_seconds(g_nc) >= 0);
}

#ifdef DT_HAVE_CUDA
/* Ordering. `stale` holds values that must never reach a sum; `fresh` the bucket data, copied
 * into the buffer on the compute stream right before each bucket's all-reduce, behind a
 * 256 MiB device copy that keeps the compute stream busy for a while: an all-reduce that did
 * not wait for the compute stream would read stale data. After the join, a copy of the whole
 * buffer on the compute stream must read the sums. Three rounds reuse the same events. */
static void test_ordering(void **state) {
  (void)state;
  const size_t total = bucket_total(), delay_bytes = (size_t)256 << 20;
  const size_t bytes = total * sizeof(float);
  float *d = g_be->ops->alloc(g_be, bytes), *fresh = g_be->ops->alloc(g_be, bytes);
  float *out = g_be->ops->alloc(g_be, bytes);
  char *delay = g_be->ops->alloc(g_be, 2 * delay_bytes);
  size_t bad = 0;
  for (unsigned round = 0; round < 3; round++) {
    float *h = dt_xmalloc(bytes);
    for (size_t i = 0; i < total; i++) h[i] = -1000.0f * (float)(g_rank + 1) - (float)round;
    g_be->ops->to_device(g_be, d, h, bytes);
    free(h);
    h = host_pattern(total, 0, 11 + round);
    g_be->ops->to_device(g_be, fresh, h, bytes);
    size_t off = 0;
    for (int b = 0; b < BUCKETS; b++) {
      const size_t n = bucket_size(b);
      if (b % 8 == 0)
        assert_int_equal(cudaMemcpyAsync(delay + delay_bytes, delay, delay_bytes,
                                         cudaMemcpyDeviceToDevice, stream()),
                         cudaSuccess);
      assert_int_equal(cudaMemcpyAsync(d + off, fresh + off, n * sizeof(float),
                                       cudaMemcpyDeviceToDevice, stream()),
                       cudaSuccess);
      dt_comm_nccl_allreduce_async(g_nc, d + off, n, stream());
      off += n;
    }
    dt_comm_nccl_join(g_nc, stream());
    assert_int_equal(cudaMemcpyAsync(out, d, bytes, cudaMemcpyDeviceToDevice, stream()),
                     cudaSuccess);
    g_be->ops->to_host(g_be, h, out, bytes);
    char what[64];
    snprintf(what, sizeof what, "ordering round %u", round);
    bad += mismatches(h, total, 0, 11 + round, what);
    free(h);
  }
  g_be->ops->free(g_be, delay);
  g_be->ops->free(g_be, out);
  g_be->ops->free(g_be, fresh);
  g_be->ops->free(g_be, d);
  assert_int_equal(bad, 0);
}
#endif

/* Rank r's flags: element i is (i + r) % 3 - 1 (-1, 0 or 1), except that the last rank sets
 * element 0 to 1 and every rank clears element 1: the maximum is known for every world size. */
static int32_t flag_value(int rank, int i) {
  if (i == 0 && rank == g_size - 1) return 1;
  if (i == 1) return 0;
  return (int32_t)((i + rank) % 3) - 1;
}

static void test_flag_max(void **state) {
  (void)state;
  enum { FLAGS = 5 };
  int32_t h[FLAGS];
  for (int i = 0; i < FLAGS; i++) h[i] = flag_value(g_rank, i);
  int32_t *d = g_be->ops->alloc(g_be, sizeof h);
  g_be->ops->to_device(g_be, d, h, sizeof h);
  dt_comm_nccl_allreduce_max_i32_async(g_nc, d, FLAGS, stream());
  dt_comm_nccl_allreduce_max_i32_async(g_nc, d, 0, stream()); /* nothing to do */
  dt_comm_nccl_join(g_nc, stream());
  dt_comm_nccl_wait(g_nc, stream(), "test_flag_max");
  memset(h, 0x7f, sizeof h);
  g_be->ops->to_host(g_be, h, d, sizeof h);
  g_be->ops->free(g_be, d);
  for (int i = 0; i < FLAGS; i++) {
    int32_t want = flag_value(0, i);
    for (int r = 1; r < g_size; r++) want = DT_MAX(want, flag_value(r, i));
    if (h[i] != want) print_message("  rank %d: flag %d is %d, want %d\n", g_rank, i, h[i], want);
    assert_int_equal(h[i], want);
  }
}

/* No GPU or no CUDA build: creation must fail cleanly, with a message, on every rank. */
static int skip_without_gpu(const char *why) {
  printf("test_nccl: skipped: %s\n", why);
  dt_error_clear();
  dt_comm_nccl *nc = dt_comm_nccl_create(g_comm);
  int rc = 77;
  if (nc) {
    /* A GPU the backend could not use (cuDNN or cuBLAS missing): NCCL alone may still work. */
    printf("test_nccl: NCCL started without a CUDA backend\n");
    dt_comm_nccl_destroy(nc);
  } else if (strlen(dt_error_message()) == 0) {
    printf("test_nccl: dt_comm_nccl_create returned NULL without a message\n");
    rc = 1;
  } else {
    printf("test_nccl: dt_comm_nccl_create: %s\n", dt_error_message());
  }
  dt_comm_finalize(g_comm);
  return rc;
}

int main(int argc, char **argv) {
  g_comm = dt_comm_init(&argc, &argv);
  g_rank = dt_comm_rank(g_comm);
  g_size = dt_comm_size(g_comm);
  g_be = dt_backend_create(DT_DEVICE_CUDA, 1, dt_comm_local_rank(g_comm),
                           dt_comm_local_size(g_comm));
  if (!g_be) return skip_without_gpu(dt_error_message());
  g_nc = dt_comm_nccl_create(g_comm);
  if (!g_nc) {
    fprintf(stderr, "test_nccl: rank %d: %s\n", g_rank, dt_error_message());
    return 1;
  }
  printf("test_nccl: rank %d of %d\n", g_rank, g_size);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_buckets),
      cmocka_unit_test(test_flag_max),
#ifdef DT_HAVE_CUDA
      cmocka_unit_test(test_ordering),
#endif
  };
  const int failed = cmocka_run_group_tests(tests, NULL, NULL);
  dt_comm_nccl_destroy(g_nc);
  g_be->ops->destroy(g_be);
  dt_comm_finalize(g_comm);
  return failed ? 1 : 0;
}
