/* testutil.c: helpers shared by the test binaries. */
#define _GNU_SOURCE
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "rng.h"

double tu_rel_err(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

double tu_rel_err_d(const double *a, const double *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi) {
  dt_rng r = dt_rng_key(seed, 99, 0, 0);
  for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)dt_rng_uniform(&r);
}

char *tu_tmpdir(const char *tag) {
  char tmpl[256];
  snprintf(tmpl, sizeof tmpl, "/tmp/dtrain-test-%s-XXXXXX", tag);
  char *d = mkdtemp(tmpl);
  if (!d) {
    perror("mkdtemp");
    exit(1);
  }
  return strdup(d);
}

int tu_write_file(const char *path, const void *data, size_t bytes) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(data, 1, bytes, f);
  return (fclose(f) == 0 && w == bytes) ? 0 : -1;
}

int tu_run(const char *cmd, char **output) {
  char *full;
  if (asprintf(&full, "%s 2>&1", cmd) < 0) return -1;
  FILE *p = popen(full, "r");
  free(full);
  if (!p) return -1;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += got;
    if (cap - len < 1024) buf = realloc(buf, cap *= 2);
  }
  buf[len] = 0;
  int st = pclose(p);
  if (output) *output = buf; else free(buf);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
