/* fuzz_util.h: what the libFuzzer harnesses of tests/fuzz share. dtrain's readers take paths,
 * so a harness writes its input into files of a private directory (on tmpfs when /dev/shm
 * exists) and calls the public loader, exactly as dtrain does. Inputs that hold several files
 * separate them with FUZZ_SEP. */
#ifndef DT_FUZZ_UTIL_H
#define DT_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_SEP "\n--8<--\n"
#define FUZZ_SEP_LEN 8

/* A fresh directory for this process, created once: under $DT_FUZZ_TMP (tests/fuzz/run.sh
 * sets it and removes it afterwards), else /dev/shm or /tmp. */
static inline const char *fuzz_dir(void) {
  static char dir[512];
  if (!dir[0]) {
    const char *base = getenv("DT_FUZZ_TMP");
    if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/dtrain-fuzz-XXXXXX", base);
    if (!mkdtemp(dir)) {
      perror("fuzz_dir: mkdtemp");
      abort();
    }
  }
  return dir;
}

/* path = fuzz_dir()/name. */
static inline void fuzz_path(char *path, size_t cap, const char *name) {
  snprintf(path, cap, "%s/%s", fuzz_dir(), name);
}

/* Write bytes to fuzz_dir()/name (replacing it); aborts on a write error, which is the
 * harness's fault, not the input's. */
static inline void fuzz_write(const char *name, const uint8_t *data, size_t size) {
  char path[256];
  fuzz_path(path, sizeof path, name);
  FILE *f = fopen(path, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
    perror(path);
    abort();
  }
}

static inline void fuzz_remove(const char *name) {
  char path[256];
  fuzz_path(path, sizeof path, name);
  unlink(path);
}

/* The next part of a multi-file input: [*pos, separator or end). Returns 0 when none is left. */
static inline int fuzz_next_part(const uint8_t *data, size_t size, size_t *pos, const uint8_t **part,
                          size_t *len) {
  if (*pos > size) return 0;
  const uint8_t *start = data + *pos;
  size_t left = size - *pos;
  const uint8_t *sep = left >= FUZZ_SEP_LEN ? memmem(start, left, FUZZ_SEP, FUZZ_SEP_LEN) : NULL;
  *part = start;
  *len = sep ? (size_t)(sep - start) : left;
  *pos += *len + FUZZ_SEP_LEN; /* past the end (> size) after the last part */
  return 1;
}

#endif
