/* testutil.h: helpers shared by the test binaries. */
#ifndef DT_TESTUTIL_H
#define DT_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Relative error in norm: |a - b| / |b| (|b| = 0: |a - b|). */
double tu_rel_err(const float *a, const float *b, size_t n);
double tu_rel_err_d(const double *a, const double *b, size_t n);
/* Fill with uniform values in [lo, hi) from a fixed seed. */
void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
/* A fresh empty directory under /tmp; the returned string is static per call site copy. */
char *tu_tmpdir(const char *tag);
/* Write bytes to path; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t bytes);
/* Run a shell command, returning its exit status (or -1), with stdout+stderr captured
 * into *output (malloc'ed, may be NULL). */
int tu_run(const char *cmd, char **output);

#endif
