/* fuzz_cifar.c: libFuzzer harness of the CIFAR-10/100 binary readers (src/data/dataset.c).
 * Input: one flags byte, then the files separated by FUZZ_SEP: for CIFAR-10 (flags bit 0
 * clear) data_batch_1.bin .. data_batch_5.bin and test_batch.bin, for CIFAR-100 train.bin
 * and test.bin. Bit 1 puts them in the directory the official tarball creates instead of
 * the data directory itself; bit 2+i leaves file i out. When dt_dataset_load succeeds every
 * label must be in range and the pixel buffers as long as the counts say. */
#define _GNU_SOURCE
#include <sys/stat.h>

#include "data/dataset.h"
#include "fuzz_util.h"

static const char *const g_files10[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                         "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
static const char *const g_files100[2] = {"train.bin", "test.bin"};

static void check_split(const dt_split *s, int classes) {
  if (s->count <= 0 || !s->images || !s->labels || s->channels != 3 || s->height != 32 ||
      s->width != 32)
    abort();
  for (int i = 0; i < s->count; i++)
    if (s->labels[i] >= classes) abort();
  volatile uint8_t last = s->images[(size_t)s->count * 3072 - 1];
  (void)last;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const unsigned flags = data[0];
  const bool is100 = flags & 1, nested = flags & 2;
  const char *const *files = is100 ? g_files100 : g_files10;
  const int nfiles = is100 ? 2 : 6;
  const char *subdirs[2] = {"cifar-10-batches-bin", "cifar-100-binary"};
  char sub[64], name[128];
  /* Clear what the previous input left in both places, for both formats. */
  for (int s = 0; s < 2; s++) {
    snprintf(sub, sizeof sub, "%s", subdirs[s]);
    for (int i = 0; i < 8; i++) {
      const char *f = i < 6 ? g_files10[i] : g_files100[i - 6];
      fuzz_remove(f);
      snprintf(name, sizeof name, "%s/%s", sub, f);
      fuzz_remove(name);
    }
    char path[256];
    fuzz_path(path, sizeof path, sub);
    mkdir(path, 0700);
  }
  size_t pos = 1;
  for (int i = 0; i < nfiles; i++) {
    const uint8_t *part = NULL;
    size_t len = 0;
    if (!fuzz_next_part(data, size, &pos, &part, &len)) break;
    if (flags >> (2 + i) & 1) continue;
    if (nested)
      snprintf(name, sizeof name, "%s/%s", subdirs[is100], files[i]);
    else
      snprintf(name, sizeof name, "%s", files[i]);
    fuzz_write(name, part, len);
  }
  dt_dataset ds;
  memset(&ds, 0, sizeof ds);
  dt_error_clear();
  if (dt_dataset_load(&ds, is100 ? "cifar100" : "cifar10", fuzz_dir()) == DT_OK) {
    check_split(&ds.train, ds.classes);
    check_split(&ds.test, ds.classes);
  } else if (strcmp(dt_error_message(), "unknown error") == 0) {
    abort();
  }
  dt_dataset_free(&ds);
  dt_error_clear();
  return 0;
}
