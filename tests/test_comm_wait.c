/* test_comm_wait.c: the bounded wait for a device collective (comm/comm_wait.c) with injected
 * probes and a simulated clock, so that no GPU and no real time is needed:
 *   - work that is done, or finishes after some polls, ends the wait with DONE;
 *   - an error the communicator reports (a dead peer) ends it with that code, at once;
 *   - work that never finishes and a communicator that never reports (a hung peer over a
 *     transport that does not notice) ends in TIMEOUT after timeout_s, not later;
 *   - a failed completion query ends it; pauses stay within DT_COMM_WAIT_MAX_PAUSE;
 *   - the messages name the rank, the GPU, the collective and the timeout key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "comm/comm_wait.h"

/* A simulated collective: done after `done_after` polls (-1: never), the communicator fails
 * at poll `error_at` with `error_code` (-1: never), the query fails at poll `query_fail_at`. */
typedef struct {
  long polls, done_after, error_at, query_fail_at;
  int error_code;
  double clock, max_pause, slept;
  long error_polls;
} fake;

static int fake_done(void *ctx) {
  fake *f = ctx;
  f->polls++;
  if (f->query_fail_at >= 0 && f->polls >= f->query_fail_at) return -1;
  return f->done_after >= 0 && f->polls >= f->done_after;
}

static int fake_error(void *ctx) {
  fake *f = ctx;
  f->error_polls++;
  return f->error_at >= 0 && f->polls >= f->error_at ? f->error_code : 0;
}

static double fake_now(void *ctx) { return ((fake *)ctx)->clock; }

static void fake_sleep(void *ctx, double s) {
  fake *f = ctx;
  assert_true(s > 0);
  if (s > f->max_pause) f->max_pause = s;
  f->clock += s;
  f->slept += s;
}

static fake fake_new(long done_after, long error_at, int code, long query_fail_at) {
  return (fake){0, done_after, error_at, query_fail_at, code, 1000.0, 0, 0, 0};
}

static dt_comm_wait_result run(fake *f, double timeout, int *code, double *waited) {
  const dt_comm_wait_probes p = {f, fake_done, fake_error, fake_now, fake_sleep};
  return dt_comm_wait(&p, timeout, code, waited);
}

static void test_done(void **state) {
  (void)state;
  int code = -1;
  double waited = -1;
  fake f = fake_new(1, -1, 0, -1);
  assert_int_equal(run(&f, 600, &code, &waited), DT_COMM_WAIT_DONE);
  assert_int_equal(f.polls, 1);
  assert_int_equal(code, 0);
  assert_true(waited == 0 && f.slept == 0); /* finished work costs no pause */
  f = fake_new(5000, -1, 0, -1);
  assert_int_equal(run(&f, 600, &code, &waited), DT_COMM_WAIT_DONE);
  assert_int_equal(f.polls, 5000);
  assert_true(f.max_pause <= DT_COMM_WAIT_MAX_PAUSE);
  assert_true(waited > 0 && waited < 1);
}

static void test_async_error(void **state) {
  (void)state;
  int code = 0;
  double waited = 0;
  fake f = fake_new(-1, 7, 6 /* ncclRemoteError */, -1);
  assert_int_equal(run(&f, 600, &code, &waited), DT_COMM_WAIT_ASYNC_ERROR);
  assert_int_equal(code, 6);
  assert_int_equal(f.polls, 7); /* reported at the first poll that sees it */
  assert_true(waited < 1);
  /* Work that completes wins over an error seen only later. */
  f = fake_new(3, 5, 6, -1);
  assert_int_equal(run(&f, 600, &code, &waited), DT_COMM_WAIT_DONE);
}

static void test_timeout(void **state) {
  (void)state;
  int code = 0;
  double waited = 0;
  fake f = fake_new(-1, -1, 0, -1); /* never completes, never reports */
  assert_int_equal(run(&f, 2.5, &code, &waited), DT_COMM_WAIT_TIMEOUT);
  assert_true(waited >= 2.5);
  assert_true(waited <= 2.5 + 2 * DT_COMM_WAIT_MAX_PAUSE);
  assert_true(f.max_pause <= DT_COMM_WAIT_MAX_PAUSE);
  assert_int_equal(f.error_polls, f.polls); /* the error was polled all along */
  /* The clock starts at the call, not at 0. */
  f = fake_new(-1, -1, 0, -1);
  f.clock = 1e6;
  assert_int_equal(run(&f, 0.01, &code, &waited), DT_COMM_WAIT_TIMEOUT);
  assert_true(waited >= 0.01 && waited < 0.011);
}

static void test_query_error(void **state) {
  (void)state;
  int code = 0;
  double waited = 0;
  fake f = fake_new(-1, -1, 0, 4);
  assert_int_equal(run(&f, 600, &code, &waited), DT_COMM_WAIT_QUERY_ERROR);
  assert_int_equal(f.polls, 4);
}

/* timeout_s <= 0 waits without limit: a collective finishing after 2000 simulated seconds. */
static void test_no_limit(void **state) {
  (void)state;
  int code = 0;
  double waited = 0;
  fake f = fake_new(2000 / DT_COMM_WAIT_MAX_PAUSE, -1, 0, -1);
  assert_int_equal(run(&f, 0, &code, &waited), DT_COMM_WAIT_DONE);
  assert_true(waited > 1000);
}

/* The real clock and pause (NULL probes): a never-finishing collective times out on time. */
static void test_real_clock(void **state) {
  (void)state;
  int code = 0;
  double waited = 0;
  fake f = fake_new(-1, -1, 0, -1);
  const dt_comm_wait_probes p = {&f, fake_done, fake_error, NULL, NULL};
  assert_int_equal(dt_comm_wait(&p, 0.05, &code, &waited), DT_COMM_WAIT_TIMEOUT);
  assert_true(waited >= 0.05 && waited < 1.0);
  assert_true(f.polls > 10);
}

static void test_messages(void **state) {
  (void)state;
  char m[512];
  dt_comm_wait_message(m, sizeof m, DT_COMM_WAIT_TIMEOUT, 0, "", 3, 8, 3,
                       "NCCL all-reduce of the gradients (5 buckets, 1.04 MiB)", 600, 600);
  assert_non_null(strstr(m, "NCCL all-reduce of the gradients (5 buckets, 1.04 MiB)"));
  assert_non_null(strstr(m, "rank 3 of 8 (GPU 3)"));
  assert_non_null(strstr(m, "comm.timeout_s = 600 s"));
  dt_comm_wait_message(m, sizeof m, DT_COMM_WAIT_ASYNC_ERROR, 6, "remote process exited", 1, 2,
                       0, "NCCL all-reduce", 3.25, 600);
  assert_non_null(strstr(m, "rank 1 of 2 (GPU 0)"));
  assert_non_null(strstr(m, "NCCL error 6: remote process exited"));
  assert_non_null(strstr(m, "aborting"));
  dt_comm_wait_message(m, sizeof m, DT_COMM_WAIT_QUERY_ERROR, 0, "an illegal memory access", 0, 2,
                       1, "NCCL all-reduce", 0, 600);
  assert_non_null(strstr(m, "device error: an illegal memory access"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_done),          cmocka_unit_test(test_async_error),
      cmocka_unit_test(test_timeout),       cmocka_unit_test(test_query_error),
      cmocka_unit_test(test_no_limit),      cmocka_unit_test(test_real_clock),
      cmocka_unit_test(test_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
