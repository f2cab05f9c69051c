/* test_thread_plan.c: the compute threads of a CPU rank (src/thread_plan.c) for node layouts of
 * 1-4 local ranks (and a 64-core node of 8): identical masks, disjoint masks, partial overlaps,
 * a mask of one core, train.threads and OMP_NUM_THREADS, the loader threads' part of the
 * budget; the start-up line and the oversubscription warning; the OpenMP wait policy choice. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "thread_plan.h"

/* A layout: ranks[r] takes CPUs first[r]..last[r] and OMP_NUM_THREADS omp[r] (0 = unset). */
typedef struct {
  int n;
  int first[8], last[8], omp[8];
} layout;

static void build(const layout *l, dt_thread_rank *ranks) {
  for (int r = 0; r < l->n; r++) {
    memset(&ranks[r], 0, sizeof ranks[r]);
    dt_cpu_mask_add_range(&ranks[r].mask, l->first[r], l->last[r]);
    ranks[r].omp_threads = l->omp[r];
  }
}

static dt_thread_plan plan(const layout *l, int self, int threads_cfg, int loader) {
  dt_thread_rank ranks[8];
  build(l, ranks);
  dt_thread_plan p;
  dt_thread_plan_make(&p, ranks, l->n, self, threads_cfg, loader);
  return p;
}

/* Every rank of the layout gets `threads` (from its share), and the node is (not) oversubscribed. */
static void expect_all(const layout *l, int loader, int threads, int sharing, bool over) {
  for (int r = 0; r < l->n; r++) {
    dt_thread_plan p = plan(l, r, 0, loader);
    assert_int_equal(p.threads, threads);
    assert_int_equal(p.source, DT_THREADS_SHARE);
    assert_int_equal(p.sharing, sharing);
    assert_int_equal(p.local_ranks, l->n);
    assert_int_equal(p.node_threads, threads * l->n);
    assert_int_equal(p.oversubscribed, over);
  }
}

static void test_mask_helpers(void **state) {
  (void)state;
  dt_cpu_mask a, b;
  dt_cpu_mask_clear(&a);
  dt_cpu_mask_clear(&b);
  assert_int_equal(dt_cpu_mask_count(&a), 0);
  dt_cpu_mask_add_range(&a, 60, 70); /* across a word boundary */
  dt_cpu_mask_add(&a, 1023);
  dt_cpu_mask_add(&a, 1024); /* past the end: ignored */
  dt_cpu_mask_add(&a, -1);
  assert_int_equal(dt_cpu_mask_count(&a), 12);
  dt_cpu_mask_add(&b, 71);
  assert_false(dt_cpu_mask_overlaps(&a, &b));
  dt_cpu_mask_add(&b, 64);
  assert_true(dt_cpu_mask_overlaps(&a, &b));
  dt_cpu_mask self;
  dt_cpu_mask_self(&self);
  assert_true(dt_cpu_mask_count(&self) >= 1);
}

static void test_parse_omp(void **state) {
  (void)state;
  assert_int_equal(dt_thread_plan_parse_omp(NULL), 0);
  assert_int_equal(dt_thread_plan_parse_omp(""), 0);
  assert_int_equal(dt_thread_plan_parse_omp("8"), 8);
  assert_int_equal(dt_thread_plan_parse_omp("8,2"), 8);
  assert_int_equal(dt_thread_plan_parse_omp(" 3 "), 3);
  assert_int_equal(dt_thread_plan_parse_omp("0"), 0);
  assert_int_equal(dt_thread_plan_parse_omp("-2"), 0);
  assert_int_equal(dt_thread_plan_parse_omp("abc"), 0);
  assert_int_equal(dt_thread_plan_parse_omp("4x"), 0);
}

/* One process: the whole mask, with the loader thread kept in the budget when it can be. */
static void test_one_rank(void **state) {
  (void)state;
  layout two = {1, {0}, {1}, {0}};
  expect_all(&two, 1, 2, 1, false); /* 2 cores, 1 loader: 2 - 1 leaves one thread: keep 2 */
  layout one = {1, {5}, {5}, {0}};
  expect_all(&one, 1, 1, 1, false); /* a mask of one core */
  layout four = {1, {0}, {3}, {0}};
  expect_all(&four, 1, 3, 1, false);
  expect_all(&four, 2, 2, 1, false);
  expect_all(&four, 3, 4, 1, false); /* 4 - 3 leaves one thread: keep the 4 */
  layout big = {1, {0}, {63}, {0}};
  expect_all(&big, 1, 63, 1, false);
  expect_all(&big, 4, 60, 1, false);
}

/* Ranks that all see the same cores (mpirun without binding) divide them. */
static void test_identical_masks(void **state) {
  (void)state;
  for (int n = 1; n <= 4; n++) {
    layout l = {n, {0}, {1}, {0}};
    for (int r = 0; r < n; r++) l.first[r] = 0, l.last[r] = 1;
    /* 2 cores: 2 for one rank, 1 each for 2; at least 1 for 3 and 4, which oversubscribes. */
    expect_all(&l, 1, n == 1 ? 2 : 1, n, n > 2);
    for (int r = 0; r < n; r++) l.last[r] = 7;
    /* 8 cores: 8 / n, less the loader thread where 2 or more remain. */
    int share = 8 / n;
    expect_all(&l, 1, share - 1 >= 2 ? share - 1 : share, n, false);
  }
  layout node = {8, {0}, {63}, {0}};
  for (int r = 0; r < 8; r++) node.first[r] = 0, node.last[r] = 63;
  expect_all(&node, 1, 7, 8, false); /* 8 x (7 compute + 1 loader) = 64 */
  dt_thread_plan p = plan(&node, 3, 0, 1);
  assert_int_equal(p.node_cores, 64);
  assert_int_equal(p.share, 8);
}

/* Ranks bound to their own cores (--bind-to core, --cpu-bind=cores) keep them. */
static void test_disjoint_masks(void **state) {
  (void)state;
  layout l = {4, {0, 2, 4, 6}, {1, 3, 5, 7}, {0}};
  expect_all(&l, 1, 2, 1, false);
  dt_thread_plan p = plan(&l, 2, 0, 1);
  assert_int_equal(p.cores, 2);
  assert_int_equal(p.node_cores, 8);
  layout singles = {3, {0, 1, 2}, {0, 1, 2}, {0}};
  expect_all(&singles, 1, 1, 1, false);
  layout wide = {2, {0, 8}, {7, 15}, {0}};
  expect_all(&wide, 1, 7, 1, false);
}

/* Partial overlaps: each rank divides its own mask by the ranks that overlap it. */
static void test_partial_overlap(void **state) {
  (void)state;
  /* 0-3 and 2-5 overlap; 6-7 is alone. */
  layout l = {3, {0, 2, 6}, {3, 5, 7}, {0}};
  dt_thread_plan p0 = plan(&l, 0, 0, 1), p1 = plan(&l, 1, 0, 1), p2 = plan(&l, 2, 0, 1);
  assert_int_equal(p0.sharing, 2);
  assert_int_equal(p0.threads, 2);
  assert_int_equal(p1.sharing, 2);
  assert_int_equal(p1.threads, 2);
  assert_int_equal(p2.sharing, 1);
  assert_int_equal(p2.threads, 2);
  assert_int_equal(p0.node_threads, 6);
  assert_int_equal(p0.node_cores, 8);
  assert_false(p0.oversubscribed);
  /* One rank over all 8 cores, two bound to one core each inside it. */
  layout m = {3, {0, 0, 1}, {7, 0, 1}, {0}};
  dt_thread_plan q0 = plan(&m, 0, 0, 1), q1 = plan(&m, 1, 0, 1), q2 = plan(&m, 2, 0, 1);
  assert_int_equal(q0.sharing, 3);
  assert_int_equal(q0.threads, 2); /* 8 / 3 = 2; 2 - 1 leaves one: keep 2 */
  assert_int_equal(q1.sharing, 2);
  assert_int_equal(q1.threads, 1);
  assert_int_equal(q2.threads, 1);
  assert_int_equal(q0.min_threads, 1);
  assert_int_equal(q0.max_threads, 2);
  assert_int_equal(q0.node_threads, 4);
  assert_false(q0.oversubscribed);
  /* Two ranks on one core, two on the other: at least 1 thread each is 4 on 2 cores. */
  layout pairs = {4, {0, 0, 1, 1}, {0, 0, 1, 1}, {0}};
  expect_all(&pairs, 1, 1, 2, true);
}

static void test_overrides(void **state) {
  (void)state;
  layout l = {4, {0, 0, 0, 0}, {7, 7, 7, 7}, {0}};
  /* train.threads wins over everything, on every rank. */
  dt_thread_plan p = plan(&l, 1, 3, 1);
  assert_int_equal(p.threads, 3);
  assert_int_equal(p.source, DT_THREADS_CONFIG);
  assert_int_equal(p.node_threads, 12);
  assert_true(p.oversubscribed);
  p = plan(&l, 1, 2, 1);
  assert_int_equal(p.node_threads, 8);
  assert_false(p.oversubscribed);
  /* OMP_NUM_THREADS per rank; train.threads still wins. */
  l.omp[0] = l.omp[1] = l.omp[2] = l.omp[3] = 5;
  p = plan(&l, 0, 0, 1);
  assert_int_equal(p.threads, 5);
  assert_int_equal(p.source, DT_THREADS_ENVIRONMENT);
  assert_true(p.oversubscribed);
  p = plan(&l, 0, 1, 1);
  assert_int_equal(p.threads, 1);
  assert_int_equal(p.source, DT_THREADS_CONFIG);
  /* One rank with OMP_NUM_THREADS, the others on their share: 1 + 3 x (8/4 = 2) = 7. */
  l.omp[0] = 1;
  l.omp[1] = l.omp[2] = l.omp[3] = 0;
  p = plan(&l, 2, 0, 1);
  assert_int_equal(p.threads, 2);
  assert_int_equal(p.node_threads, 7);
  assert_int_equal(p.min_threads, 1);
  /* The loader's threads never change an override. */
  p = plan(&l, 0, 0, 8);
  assert_int_equal(p.threads, 1);
  /* More threads than the mask's single core. */
  layout one = {1, {3}, {3}, {4}};
  p = plan(&one, 0, 0, 1);
  assert_int_equal(p.threads, 4);
  assert_true(p.oversubscribed);
}

static void test_describe(void **state) {
  (void)state;
  char line[200], warn[400];
  layout node = {8, {0}, {63}, {0}};
  for (int r = 0; r < 8; r++) node.first[r] = 0, node.last[r] = 63;
  dt_thread_plan p = plan(&node, 0, 0, 0);
  dt_thread_plan_describe(&p, 8, line, sizeof line);
  assert_string_equal(line, "ranks: 8 x 8 threads (64 cores, 8 local ranks)");
  dt_thread_plan_describe(&p, 16, line, sizeof line);
  assert_string_equal(line, "ranks: 16 x 8 threads (64 cores, 8 local ranks)");
  layout one = {1, {0}, {0}, {0}};
  p = plan(&one, 0, 0, 1);
  dt_thread_plan_describe(&p, 1, line, sizeof line);
  assert_string_equal(line, "ranks: 1 x 1 thread (1 core, 1 local rank)");
  layout two = {2, {0, 0}, {1, 1}, {3, 3}};
  p = plan(&two, 0, 0, 1);
  dt_thread_plan_describe(&p, 2, line, sizeof line);
  assert_string_equal(line, "ranks: 2 x 3 threads (2 cores, 2 local ranks; threads from OMP_NUM_THREADS)");
  dt_thread_plan_warning(&p, warn, sizeof warn);
  assert_non_null(strstr(warn, "3 compute threads (OMP_NUM_THREADS) on the 2 cores of this rank"));
  p = plan(&two, 0, 1, 1);
  dt_thread_plan_describe(&p, 2, line, sizeof line);
  assert_string_equal(line, "ranks: 2 x 1 thread (2 cores, 2 local ranks; threads from train.threads)");
  layout m = {3, {0, 0, 1}, {7, 0, 1}, {0}};
  p = plan(&m, 0, 0, 1);
  dt_thread_plan_describe(&p, 3, line, sizeof line);
  assert_string_equal(line, "ranks: 3 x 1-2 threads (8 cores, 3 local ranks)");
  /* Node-wide oversubscription, each rank within its own mask. */
  layout four = {4, {0, 0, 0, 0}, {1, 1, 1, 1}, {2, 2, 2, 2}};
  p = plan(&four, 0, 0, 1);
  dt_thread_plan_warning(&p, warn, sizeof warn);
  assert_non_null(strstr(warn, "4 local ranks start 8 compute threads in all on 2 cores (OMP_NUM_THREADS)"));
  /* More ranks than cores: one thread each is still too many. */
  layout more = {4, {0, 0, 0, 0}, {1, 1, 1, 1}, {0}};
  p = plan(&more, 0, 0, 1);
  dt_thread_plan_warning(&p, warn, sizeof warn);
  assert_non_null(strstr(warn, "4 local ranks on 2 cores"));
}

/* Processes of other jobs on the same cores (the registry's count, thread_share.h) divide them
 * like the job's own ranks; the overrides still win. */
static void test_other_jobs(void **state) {
  (void)state;
  dt_thread_rank r[2];
  memset(r, 0, sizeof r);
  dt_cpu_mask_add_range(&r[0].mask, 0, 1);
  r[0].registry_sharing = 2; /* this process and one of another job */
  dt_thread_plan p;
  dt_thread_plan_make(&p, r, 1, 0, 0, 1);
  assert_int_equal(p.threads, 1);
  assert_int_equal(p.job_sharing, 1);
  assert_int_equal(p.sharing, 2);
  char line[200];
  dt_thread_plan_describe(&p, 1, line, sizeof line);
  assert_string_equal(line, "ranks: 1 x 1 thread (2 cores, 1 local rank, 1 other dtrain process "
                            "on these cores)");
  dt_thread_plan_describe_rank(&p, 0, 1, line, sizeof line);
  assert_non_null(strstr(line, "shared by 1 local rank and 1 other dtrain process (share)"));
  r[0].registry_sharing = 1; /* alone */
  dt_thread_plan_make(&p, r, 1, 0, 0, 1);
  assert_int_equal(p.threads, 2);
  /* Two ranks of this job and two other processes on 8 cores: 8 / 4 = 2 each. */
  r[1] = r[0];
  dt_cpu_mask_add_range(&r[0].mask, 0, 7);
  dt_cpu_mask_add_range(&r[1].mask, 0, 7);
  r[0].registry_sharing = r[1].registry_sharing = 4;
  dt_thread_plan_make(&p, r, 2, 1, 0, 1);
  assert_int_equal(p.job_sharing, 2);
  assert_int_equal(p.sharing, 4);
  assert_int_equal(p.threads, 2);
  /* A registry that saw fewer than the job's ranks (not all joined) does not lower the count. */
  r[0].registry_sharing = r[1].registry_sharing = 1;
  dt_thread_plan_make(&p, r, 2, 1, 0, 1);
  assert_int_equal(p.sharing, 2);
  assert_int_equal(p.threads, 3);
  r[0].registry_sharing = r[1].registry_sharing = 4;
  dt_thread_plan_make(&p, r, 2, 1, 6, 1); /* train.threads */
  assert_int_equal(p.threads, 6);
  r[0].omp_threads = r[1].omp_threads = 5;
  dt_thread_plan_make(&p, r, 2, 1, 0, 1); /* OMP_NUM_THREADS */
  assert_int_equal(p.threads, 5);
}

static void test_wait_policy(void **state) {
  (void)state;
  /* A process alone on its cores, or beside other jobs, keeps the runtime's spinning. */
  assert_int_equal(dt_wait_policy_choose(2, 2, 1, 0), DT_WAIT_RUNTIME);
  assert_int_equal(dt_wait_policy_choose(1, 2, 1, 0), DT_WAIT_RUNTIME);
  assert_int_equal(dt_wait_policy_choose(2, 2, 1, 2), DT_WAIT_RUNTIME);
  /* Ranks bound to their own cores: 4 x 4 <= 16. */
  assert_int_equal(dt_wait_policy_choose(4, 16, 4, 0), DT_WAIT_RUNTIME);
  /* Ranks over the same cores, more ranks than cores, more OpenMP threads than cores. */
  assert_int_equal(dt_wait_policy_choose(16, 16, 4, 0), DT_WAIT_PASSIVE);
  assert_int_equal(dt_wait_policy_choose(2, 2, 2, 0), DT_WAIT_PASSIVE);
  assert_int_equal(dt_wait_policy_choose(1, 2, 1, 4), DT_WAIT_PASSIVE);
  assert_int_equal(dt_wait_policy_choose(8, 64, 1, 9), DT_WAIT_PASSIVE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mask_helpers),   cmocka_unit_test(test_parse_omp),
      cmocka_unit_test(test_one_rank),       cmocka_unit_test(test_identical_masks),
      cmocka_unit_test(test_disjoint_masks), cmocka_unit_test(test_partial_overlap),
      cmocka_unit_test(test_overrides),      cmocka_unit_test(test_describe),
      cmocka_unit_test(test_other_jobs),     cmocka_unit_test(test_wait_policy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
