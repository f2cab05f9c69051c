/* common.c: error message buffer, fatal errors, checked allocation, clock. */
#define _GNU_SOURCE
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char g_error[2048];
static int g_error_set;

dt_status dt_error_set(dt_status status, const char *fmt, ...) {
  /* Formatted aside first: the arguments may include dt_error_message() itself. */
  char msg[sizeof g_error];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  memcpy(g_error, msg, sizeof g_error);
  g_error_set = 1;
  return status;
}

const char *dt_error_message(void) { return g_error_set ? g_error : "unknown error"; }

void dt_error_clear(void) {
  g_error_set = 0;
  g_error[0] = 0;
}

static dt_fatal_hooks g_fatal_hooks;

void dt_fatal_set_hooks(const dt_fatal_hooks *hooks) {
  g_fatal_hooks = hooks ? *hooks : (dt_fatal_hooks){0};
}

_Noreturn void dt_fatal(const char *file, int line, const char *fmt, ...) {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "dtrain: fatal: %s (%s:%d, rank %d, host %s)\n", msg, file, line,
          g_fatal_hooks.world_rank ? g_fatal_hooks.world_rank() : 0, host);
  fflush(stderr);
  if (g_fatal_hooks.abort_all) g_fatal_hooks.abort_all(DT_EXIT_FATAL);
  exit(DT_EXIT_FATAL);
}

void *dt_xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) DT_FATAL("out of memory allocating %zu bytes", bytes);
  return p;
}

void *dt_xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) DT_FATAL("out of memory allocating %zu x %zu bytes", count, size);
  return p;
}

void *dt_xaligned(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) DT_FATAL("out of memory allocating %zu bytes", bytes);
  return p;
}

char *dt_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = dt_xmalloc(n);
  memcpy(p, s, n);
  return p;
}

double dt_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
