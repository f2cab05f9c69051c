/* golden.c: reader of golden tensor files (format in tests/golden.h). */
#include "golden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

int golden_load(golden_file *gf, const char *path) {
  memset(gf, 0, sizeof *gf);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "golden: cannot open %s\n", path);
    return -1;
  }
  char magic[8];
  uint32_t count;
  if (rd(f, magic, 8) || memcmp(magic, "DTGOLD1", 8) != 0 || rd(f, &count, 4)) goto bad;
  gf->t = calloc(count, sizeof *gf->t);
  for (uint32_t i = 0; i < count; i++) {
    golden_tensor *t = &gf->t[i];
    uint32_t len, ndim;
    if (rd(f, &len, 4) || len > 4096) goto bad;
    t->name = calloc(len + 1, 1);
    gf->n = (int)i + 1;
    if (rd(f, t->name, len) || rd(f, &ndim, 4) || ndim > 8) goto bad;
    t->ndim = (int)ndim;
    t->count = 1;
    for (uint32_t d = 0; d < ndim; d++) {
      if (rd(f, &t->dims[d], 8) || t->dims[d] < 0) goto bad;
      t->count *= (size_t)t->dims[d];
    }
    t->data = malloc(t->count * sizeof(float) + 1);
    if (rd(f, t->data, t->count * sizeof(float))) goto bad;
  }
  fclose(f);
  return 0;
bad:
  fprintf(stderr, "golden: %s is malformed\n", path);
  fclose(f);
  golden_free(gf);
  return -1;
}

const golden_tensor *golden_find(const golden_file *gf, const char *name) {
  for (int i = 0; i < gf->n; i++)
    if (strcmp(gf->t[i].name, name) == 0) return &gf->t[i];
  return NULL;
}

void golden_free(golden_file *gf) {
  for (int i = 0; i < gf->n; i++) {
    free(gf->t[i].name);
    free(gf->t[i].data);
  }
  free(gf->t);
  memset(gf, 0, sizeof *gf);
}
