/* golden.h: reader of the golden tensor files written by tools/dtrain_tools/make_golden.py.
 * Format (little-endian): magic "DTGOLD1\0", uint32 record count, then per record: uint32 name
 * length, name, uint32 ndim, ndim x int64 dims, float32 data. */
#ifndef DT_GOLDEN_H
#define DT_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *name;
  int ndim;
  int64_t dims[8];
  size_t count;
  float *data;
} golden_tensor;

typedef struct {
  golden_tensor *t;
  int n;
} golden_file;

/* Returns 0 on success; on failure prints why and returns -1. */
int golden_load(golden_file *gf, const char *path);
const golden_tensor *golden_find(const golden_file *gf, const char *name);
void golden_free(golden_file *gf);

#endif
