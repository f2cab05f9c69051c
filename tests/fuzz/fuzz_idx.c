/* fuzz_idx.c: libFuzzer harness of the IDX reader (MNIST family, src/data/dataset.c).
 * Input: one flags byte, then up to four files separated by FUZZ_SEP, in the order
 * train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
 * t10k-labels-idx1-ubyte. Bit i of the flags names file i with ".gz" (read through zlib),
 * bit 4+i leaves file i out. dt_dataset_load("mnist") reads the directory; when it succeeds
 * the counts must agree with the files and every label must be in range. */
#define _GNU_SOURCE
#include "data/dataset.h"
#include "fuzz_util.h"

static const char *const g_files[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

static void check_split(const dt_split *s, int classes) {
  if (s->count <= 0 || !s->images || !s->labels || s->channels != 1 || s->height != 28 ||
      s->width != 28)
    abort();
  for (int i = 0; i < s->count; i++)
    if (s->labels[i] >= classes) abort();
  /* Touch the last pixel: ASan reports a buffer shorter than count images. */
  volatile uint8_t last = s->images[(size_t)s->count * 28 * 28 - 1];
  (void)last;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const unsigned flags = data[0];
  size_t pos = 1;
  char name[64];
  for (int i = 0; i < 4; i++) {
    const uint8_t *part = NULL;
    size_t len = 0;
    int have = fuzz_next_part(data, size, &pos, &part, &len);
    snprintf(name, sizeof name, "%s.gz", g_files[i]);
    fuzz_remove(name);
    fuzz_remove(g_files[i]);
    if (!have || (flags >> (4 + i) & 1)) continue;
    fuzz_write((flags >> i & 1) ? name : g_files[i], part, len);
  }
  dt_dataset ds;
  memset(&ds, 0, sizeof ds);
  dt_error_clear();
  if (dt_dataset_load(&ds, "mnist", fuzz_dir()) == DT_OK) {
    check_split(&ds.train, ds.classes);
    check_split(&ds.test, ds.classes);
  } else if (strcmp(dt_error_message(), "unknown error") == 0) {
    abort(); /* refused without a message */
  }
  dt_dataset_free(&ds);
  dt_error_clear();
  return 0;
}
