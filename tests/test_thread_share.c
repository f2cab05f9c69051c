/* test_thread_share.c: the registry of dtrain processes (src/thread_share.c) in a directory of
 * its own, with child processes standing in for other dtrain processes: overlapping masks count,
 * disjoint ones do not, the entry of a killed process is ignored and removed, one that ended is
 * gone; the thread count recounted between steps shrinks when a process arrives and grows back
 * when it ends, at most once per interval; a removed own entry is written again. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "thread_share.h"

static char g_dir[256];

static dt_cpu_mask mask_of(int first, int last) {
  dt_cpu_mask m;
  dt_cpu_mask_clear(&m);
  dt_cpu_mask_add_range(&m, first, last);
  return m;
}

/* Entries ("p<pid>-<start time>") in the registry directory. */
static int entries(void) {
  DIR *d = opendir(g_dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] == 'p';
  closedir(d);
  return n;
}

/* The parent's ends of the children's control pipes: a child closes them all, so that only the
 * parent holds each and closing it ends that child. */
static int g_ctl[8], g_nctl;

/* A child process registered with CPUs first..last; it leaves the registry and exits when the
 * parent closes *ctl, or dies by kill. Returns its pid once it has joined. */
static pid_t other_process(int first, int last, int *ctl) {
  int ready[2], cmd[2];
  assert_int_equal(pipe(ready), 0);
  assert_int_equal(pipe(cmd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(ready[0]);
    close(cmd[1]);
    for (int i = 0; i < g_nctl; i++) close(g_ctl[i]);
    dt_cpu_mask m = mask_of(first, last);
    dt_share *s = dt_share_join(g_dir, &m, NULL, 0);
    char ok = s ? 1 : 0;
    if (write(ready[1], &ok, 1) != 1) _exit(2);
    char c;
    while (read(cmd[0], &c, 1) > 0) {
    }
    dt_share_leave(s);
    _exit(0);
  }
  close(ready[1]);
  close(cmd[0]);
  char ok = 0;
  assert_int_equal(read(ready[0], &ok, 1), 1);
  assert_int_equal(ok, 1);
  close(ready[0]);
  *ctl = cmd[1];
  assert_true(g_nctl < 8);
  g_ctl[g_nctl++] = cmd[1];
  return pid;
}

static void forget_ctl(int ctl) {
  for (int i = 0; i < g_nctl; i++)
    if (g_ctl[i] == ctl) g_ctl[i] = g_ctl[--g_nctl];
  close(ctl);
}

static void end_process(pid_t pid, int ctl) {
  forget_ctl(ctl);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void kill_process(pid_t pid, int ctl) {
  kill(pid, SIGKILL);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  forget_ctl(ctl);
}

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/test_thread_share-%ld", (long)getpid());
  return 0;
}

static int teardown(void **state) {
  (void)state;
  DIR *d = opendir(g_dir);
  if (d) {
    struct dirent *e;
    char path[600];
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
      unlink(path);
    }
    closedir(d);
    rmdir(g_dir);
  }
  return 0;
}

static void test_overlap(void **state) {
  (void)state;
  dt_cpu_mask mine = mask_of(0, 1);
  dt_share *s = dt_share_join(g_dir, &mine, NULL, 0);
  assert_non_null(s);
  assert_int_equal(dt_share_count(s), 1);
  int ctl_a, ctl_b, ctl_c;
  pid_t a = other_process(1, 1, &ctl_a); /* overlaps CPU 1 */
  assert_int_equal(dt_share_count(s), 2);
  pid_t b = other_process(2, 3, &ctl_b); /* disjoint: not counted */
  assert_int_equal(dt_share_count(s), 2);
  pid_t c = other_process(0, 3, &ctl_c); /* overlaps both */
  assert_int_equal(dt_share_count(s), 3);
  assert_int_equal(entries(), 4);
  end_process(a, ctl_a); /* left: its entry is gone */
  assert_int_equal(entries(), 3);
  assert_int_equal(dt_share_count(s), 2);
  kill_process(c, ctl_c); /* killed: its entry stays until a count finds it stale */
  assert_int_equal(entries(), 3);
  assert_int_equal(dt_share_count(s), 1);
  assert_int_equal(entries(), 2);
  end_process(b, ctl_b);
  dt_share_leave(s);
  assert_int_equal(entries(), 0);
}

/* An entry removed behind the process's back is written again by its next count. */
static void test_entry_rewritten(void **state) {
  (void)state;
  dt_cpu_mask mine = mask_of(0, 1);
  dt_share *s = dt_share_join(g_dir, &mine, NULL, 0);
  assert_non_null(s);
  char path[600] = "", prefix[32];
  snprintf(prefix, sizeof prefix, "p%ld-", (long)getpid());
  DIR *d = opendir(g_dir);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
  closedir(d);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(entries(), 0);
  assert_int_equal(dt_share_count(s), 1);
  assert_int_equal(entries(), 1);
  /* A child sees the rewritten entry as a live process. */
  int ctl;
  pid_t a = other_process(0, 0, &ctl);
  assert_int_equal(dt_share_count(s), 2);
  end_process(a, ctl);
  dt_share_leave(s);
}

static void test_bad_dir(void **state) {
  (void)state;
  char why[256];
  dt_cpu_mask m = mask_of(0, 1);
  assert_int_equal(mkdir(g_dir, 0700), 0);
  char file[600];
  snprintf(file, sizeof file, "%s/file", g_dir);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);
  assert_null(dt_share_join(file, &m, why, sizeof why)); /* not a directory */
  assert_non_null(strstr(why, "file"));
  char deep[700];
  snprintf(deep, sizeof deep, "%s/file/sub", g_dir);
  assert_null(dt_share_join(deep, &m, why, sizeof why));
  assert_non_null(strstr(why, "cannot create"));
}

static dt_thread_plan share_plan(int cores, int loader) {
  dt_thread_rank r;
  memset(&r, 0, sizeof r);
  r.mask = mask_of(0, cores - 1);
  dt_thread_plan p;
  dt_thread_plan_make(&p, &r, 1, 0, 0, loader);
  return p;
}

static void test_threads_rule(void **state) {
  (void)state;
  dt_thread_plan two = share_plan(2, 1), eight = share_plan(8, 1);
  assert_int_equal(dt_share_threads(&two, 1), 2);
  assert_int_equal(dt_share_threads(&two, 2), 1);
  assert_int_equal(dt_share_threads(&two, 5), 1);
  assert_int_equal(dt_share_threads(&eight, 1), 7);
  assert_int_equal(dt_share_threads(&eight, 2), 3);
  assert_int_equal(dt_share_threads(&eight, 4), 2);
  assert_int_equal(dt_share_threads(&eight, 8), 1);
}

/* The count between steps: shrink when a second process arrives, grow back when it ends. */
static void test_watch(void **state) {
  (void)state;
  dt_cpu_mask mine = mask_of(0, 1);
  dt_share *s = dt_share_join(g_dir, &mine, NULL, 0);
  assert_non_null(s);
  dt_thread_plan p = share_plan(2, 1);
  assert_int_equal(p.threads, 2);
  dt_share_watch w;
  dt_share_watch_init(&w, s, &p, 1.0);
  int before = -1;
  assert_int_equal(dt_share_watch_poll(&w, 10.0, &before), 0); /* alone: no change */
  int ctl;
  pid_t a = other_process(0, 1, &ctl);
  assert_int_equal(dt_share_watch_poll(&w, 10.5, &before), 0); /* within the interval */
  assert_int_equal(dt_share_watch_poll(&w, 11.0, &before), 1);
  assert_int_equal(before, 2);
  assert_int_equal(w.threads, 1);
  assert_int_equal(w.sharing, 2);
  char line[256];
  dt_share_describe_change(&w, before, line, sizeof line);
  assert_string_equal(line, "threads: 2 -> 1 (another dtrain process shares these cores; 2 cores, "
                            "2 processes on them)");
  assert_int_equal(dt_share_watch_poll(&w, 12.0, &before), 0); /* still two */
  kill_process(a, ctl);
  assert_int_equal(dt_share_watch_poll(&w, 13.0, &before), 2);
  assert_int_equal(before, 1);
  dt_share_describe_change(&w, before, line, sizeof line);
  assert_string_equal(line, "threads: 1 -> 2 (no other dtrain process shares these cores now; 2 "
                            "cores, 1 process on them)");
  /* Threads fixed by train.threads or OMP_NUM_THREADS are not watched. */
  dt_thread_rank r;
  memset(&r, 0, sizeof r);
  r.mask = mine;
  dt_thread_plan fixed;
  dt_thread_plan_make(&fixed, &r, 1, 0, 2, 1);
  dt_share_watch_init(&w, s, &fixed, 1.0);
  a = other_process(0, 1, &ctl);
  assert_int_equal(dt_share_watch_poll(&w, 20.0, &before), 0);
  assert_int_equal(w.threads, 2);
  end_process(a, ctl);
  dt_share_leave(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_overlap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_entry_rewritten, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_dir, setup, teardown),
      cmocka_unit_test(test_threads_rule),
      cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
