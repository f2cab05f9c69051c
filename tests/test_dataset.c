/* test_dataset.c: the dataset readers. Small IDX (raw and gzip) and CIFAR-10/100 binary files
 * are written into a temporary directory and read back exactly; each kind of corrupt file must
 * give DT_ERR_DATA with a message naming the file; the real Fashion-MNIST must load with its
 * known counts and class balance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "data/dataset.h"
#include "rng.h"
#include "testutil.h"

#define TRAIN_N 50
#define TEST_N 20

typedef struct {
  uint8_t *data;
  size_t len;
} bytes;

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Pixel bytes and labels of a synthetic split, a pure function of (tag, index). */
static uint8_t pixel_of(int tag, size_t i) { return (uint8_t)((i * 131 + (size_t)tag * 17 + i / 7) & 0xff); }
static uint8_t label_of(int tag, int i, int classes) { return (uint8_t)((i * 7 + tag) % classes); }

static bytes idx_images(int tag, uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols) {
  bytes b;
  b.len = 16 + (size_t)n * rows * cols;
  b.data = malloc(b.len);
  put_be32(b.data, magic);
  put_be32(b.data + 4, n);
  put_be32(b.data + 8, rows);
  put_be32(b.data + 12, cols);
  for (size_t i = 0; i < b.len - 16; i++) b.data[16 + i] = pixel_of(tag, i);
  return b;
}

static bytes idx_labels(int tag, uint32_t magic, uint32_t n, int classes) {
  bytes b;
  b.len = 8 + n;
  b.data = malloc(b.len);
  put_be32(b.data, magic);
  put_be32(b.data + 4, n);
  for (uint32_t i = 0; i < n; i++) b.data[8 + i] = label_of(tag, (int)i, classes);
  return b;
}

static void write_gz(const char *path, const bytes *b) {
  gzFile gz = gzopen(path, "wb");
  assert_non_null(gz);
  assert_int_equal(gzwrite(gz, b->data, (unsigned)b->len), (int)b->len);
  assert_int_equal(gzclose(gz), Z_OK);
}

static char *path_in(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

/* Write b as dir/name (raw) or dir/name.gz, then free b. */
static void emit(const char *dir, const char *name, bytes b, bool gz) {
  char full[512];
  snprintf(full, sizeof full, "%s/%s%s", dir, name, gz ? ".gz" : "");
  if (gz)
    write_gz(full, &b);
  else
    assert_int_equal(tu_write_file(full, b.data, b.len), 0);
  free(b.data);
}

/* A valid MNIST-style directory: train (tag 1) TRAIN_N images, test (tag 2) TEST_N. */
static void write_idx_set(const char *dir, bool gz) {
  emit(dir, "train-images-idx3-ubyte", idx_images(1, 0x803, TRAIN_N, 28, 28), gz);
  emit(dir, "train-labels-idx1-ubyte", idx_labels(1, 0x801, TRAIN_N, 10), gz);
  emit(dir, "t10k-images-idx3-ubyte", idx_images(2, 0x803, TEST_N, 28, 28), gz);
  emit(dir, "t10k-labels-idx1-ubyte", idx_labels(2, 0x801, TEST_N, 10), gz);
}

static void check_idx_split(const dt_split *s, int tag, int n) {
  assert_int_equal(s->count, n);
  assert_int_equal(s->channels, 1);
  assert_int_equal(s->height, 28);
  assert_int_equal(s->width, 28);
  for (size_t i = 0; i < (size_t)n * 784; i++)
    if (s->images[i] != pixel_of(tag, i)) fail_msg("pixel %zu differs", i);
  for (int i = 0; i < n; i++) assert_int_equal(s->labels[i], label_of(tag, i, 10));
}

static int setup_dir(void **state) {
  *state = tu_tmpdir("dataset");
  dt_error_clear();
  return 0;
}

static int teardown_dir(void **state) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", (char *)*state);
  tu_run(cmd, NULL);
  free(*state);
  return 0;
}

/* Load `name` from dir and expect DT_ERR_DATA whose message names `file` and contains `what`. */
static void expect_data_error(const char *name, const char *dir, const char *file, const char *what) {
  dt_dataset ds;
  dt_error_clear();
  dt_status st = dt_dataset_load(&ds, name, dir);
  const char *msg = dt_error_message();
  print_message("  message: %s\n", msg);
  assert_int_equal(st, DT_ERR_DATA);
  if (!strstr(msg, file)) fail_msg("message does not name %s: %s", file, msg);
  if (what && !strstr(msg, what)) fail_msg("message lacks '%s': %s", what, msg);
  /* A failed load leaves nothing to free. */
  assert_null(ds.train.images);
  assert_null(ds.train.labels);
  assert_null(ds.test.images);
  assert_null(ds.test.labels);
  dt_dataset_free(&ds);
}

/* ---- describe and default dir ---- */

static void test_describe(void **state) {
  (void)state;
  dt_dataset ds;
  assert_int_equal(dt_dataset_describe("fashion_mnist", &ds), DT_OK);
  assert_string_equal(ds.name, "fashion_mnist");
  assert_int_equal(ds.classes, 10);
  assert_true(ds.default_hflip);
  assert_float_equal(ds.mean[0], 0.2860f, 0);
  assert_float_equal(ds.std[0], 0.3530f, 0);
  assert_int_equal(ds.train.channels, 1);
  assert_int_equal(ds.train.height, 28);
  assert_int_equal(ds.test.width, 28);
  assert_int_equal(ds.train.count, 0);
  assert_null(ds.train.images);
  assert_null(ds.test.labels);

  assert_int_equal(dt_dataset_describe("mnist", &ds), DT_OK);
  assert_false(ds.default_hflip);
  assert_float_equal(ds.mean[0], 0.1307f, 0);
  assert_int_equal(dt_dataset_describe("kmnist", &ds), DT_OK);
  assert_false(ds.default_hflip);
  assert_float_equal(ds.std[0], 0.3475f, 0);
  assert_int_equal(dt_dataset_describe("cifar10", &ds), DT_OK);
  assert_true(ds.default_hflip);
  assert_int_equal(ds.classes, 10);
  assert_int_equal(ds.test.channels, 3);
  assert_int_equal(ds.test.height, 32);
  assert_float_equal(ds.mean[2], 0.4465f, 0);
  assert_float_equal(ds.std[1], 0.2435f, 0);
  assert_int_equal(dt_dataset_describe("cifar100", &ds), DT_OK);
  assert_int_equal(ds.classes, 100);
  assert_true(ds.default_hflip);
  assert_float_equal(ds.mean[0], 0.5071f, 0);

  dt_error_clear();
  assert_int_equal(dt_dataset_describe("imagenet", &ds), DT_ERR_CONFIG);
  assert_non_null(strstr(dt_error_message(), "imagenet"));
  dt_error_clear();

  assert_string_equal(dt_dataset_default_dir("fashion_mnist"), "/usr/share/datasets/fashion-mnist");
  assert_string_equal(dt_dataset_default_dir("mnist"), "data/mnist");
  assert_string_equal(dt_dataset_default_dir("kmnist"), "data/kmnist");
  assert_string_equal(dt_dataset_default_dir("cifar10"), "data/cifar10");
  assert_string_equal(dt_dataset_default_dir("cifar100"), "data/cifar100");
}

/* ---- IDX round trips ---- */

static void test_idx_raw_roundtrip(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "mnist", dir), DT_OK);
  assert_string_equal(ds.name, "mnist");
  assert_int_equal(ds.classes, 10);
  check_idx_split(&ds.train, 1, TRAIN_N);
  check_idx_split(&ds.test, 2, TEST_N);
  dt_dataset_free(&ds);
  assert_null(ds.train.images);
}

static void test_idx_gz_roundtrip(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "kmnist", dir), DT_OK);
  check_idx_split(&ds.train, 1, TRAIN_N);
  check_idx_split(&ds.test, 2, TEST_N);
  dt_dataset_free(&ds);
}

/* With both present, the .gz file is read: the raw one here is deliberately broken. */
static void test_idx_prefers_gz(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  emit(dir, "train-images-idx3-ubyte", idx_images(1, 0, TRAIN_N, 28, 28), false);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "fashion_mnist", dir), DT_OK);
  check_idx_split(&ds.train, 1, TRAIN_N);
  dt_dataset_free(&ds);
}

/* ---- IDX corruptions, one per test ---- */

static void test_idx_bad_magic(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  emit(dir, "train-images-idx3-ubyte", idx_images(1, 0, TRAIN_N, 28, 28), true);
  char *f = path_in(dir, "train-images-idx3-ubyte.gz");
  expect_data_error("mnist", dir, f, "bad magic number 0x00000000 (expected 0x00000803");
  free(f);
}

static void test_idx_bad_label_magic(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  emit(dir, "t10k-labels-idx1-ubyte", idx_labels(2, 0x803, TEST_N, 10), false);
  char *f = path_in(dir, "t10k-labels-idx1-ubyte");
  expect_data_error("mnist", dir, f, "bad magic number 0x00000803 (expected 0x00000801");
  free(f);
}

static void test_idx_wrong_dimensions(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  emit(dir, "t10k-images-idx3-ubyte", idx_images(2, 0x803, TEST_N, 32, 28), false);
  char *f = path_in(dir, "t10k-images-idx3-ubyte");
  expect_data_error("mnist", dir, f, "32x28");
  free(f);
}

static void test_idx_truncated(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  bytes b = idx_images(1, 0x803, TRAIN_N, 28, 28);
  b.len -= 100;
  emit(dir, "train-images-idx3-ubyte", b, false);
  char *f = path_in(dir, "train-images-idx3-ubyte");
  char what[200];
  snprintf(what, sizeof what, "truncated: header says %d images of 28x28 (%d bytes) but the file has %d bytes",
           TRAIN_N, 16 + TRAIN_N * 784, 16 + TRAIN_N * 784 - 100);
  expect_data_error("mnist", dir, f, what);
  free(f);
}

static void test_idx_truncated_gz(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  bytes b = idx_labels(2, 0x801, TEST_N, 10);
  b.len -= 3;
  emit(dir, "t10k-labels-idx1-ubyte", b, true);
  char *f = path_in(dir, "t10k-labels-idx1-ubyte.gz");
  expect_data_error("mnist", dir, f, "truncated");
  free(f);
}

static void test_idx_truncated_header(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  bytes b = idx_images(1, 0x803, TRAIN_N, 28, 28);
  b.len = 10;
  emit(dir, "train-images-idx3-ubyte", b, false);
  char *f = path_in(dir, "train-images-idx3-ubyte");
  expect_data_error("mnist", dir, f, "truncated");
  free(f);
}

static void test_idx_trailing_bytes(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  bytes b = idx_images(2, 0x803, TEST_N, 28, 28);
  b.data = realloc(b.data, b.len + 5);
  memset(b.data + b.len, 0, 5);
  b.len += 5;
  emit(dir, "t10k-images-idx3-ubyte", b, true);
  char *f = path_in(dir, "t10k-images-idx3-ubyte.gz");
  expect_data_error("mnist", dir, f, "trailing bytes");
  free(f);
}

/* A raw file's length is checked against its header before reading. */
static void test_idx_trailing_bytes_raw(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  bytes b = idx_labels(1, 0x801, TRAIN_N, 10);
  b.data = realloc(b.data, b.len + 3);
  memset(b.data + b.len, 0, 3);
  b.len += 3;
  emit(dir, "train-labels-idx1-ubyte", b, false);
  char *f = path_in(dir, "train-labels-idx1-ubyte");
  char what[160];
  snprintf(what, sizeof what, "trailing bytes: header says %d labels (%d bytes) but the file has %d bytes",
           TRAIN_N, 8 + TRAIN_N, 8 + TRAIN_N + 3);
  expect_data_error("mnist", dir, f, what);
  free(f);
}

static void test_idx_count_mismatch(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  emit(dir, "train-labels-idx1-ubyte", idx_labels(1, 0x801, TRAIN_N - 1, 10), false);
  char *f = path_in(dir, "train-labels-idx1-ubyte");
  char *g = path_in(dir, "train-images-idx3-ubyte");
  char what[64];
  snprintf(what, sizeof what, "%d images but %d labels", TRAIN_N, TRAIN_N - 1);
  expect_data_error("mnist", dir, f, what);
  expect_data_error("mnist", dir, g, NULL);
  free(f);
  free(g);
}

static void test_idx_label_out_of_range(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  bytes b = idx_labels(2, 0x801, TEST_N, 10);
  b.data[8 + 13] = 10;
  emit(dir, "t10k-labels-idx1-ubyte", b, false);
  char *f = path_in(dir, "t10k-labels-idx1-ubyte");
  expect_data_error("mnist", dir, f, "label 10 of item 13 is out of range");
  free(f);
}

static void test_idx_missing_file(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  char *f = path_in(dir, "t10k-labels-idx1-ubyte");
  assert_int_equal(unlink(f), 0);
  expect_data_error("mnist", dir, f, "data.dir");
  char *g = path_in(dir, "t10k-labels-idx1-ubyte.gz");
  expect_data_error("mnist", dir, g, "not found");
  free(f);
  free(g);
  /* A directory that does not exist: the paths tried are named. */
  char *h = path_in(dir, "nowhere");
  expect_data_error("kmnist", h, "nowhere/train-images-idx3-ubyte", "data.dir");
  free(h);
}

static void test_idx_corrupt_gzip(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  char *f = path_in(dir, "train-images-idx3-ubyte.gz");
  struct stat sb;
  assert_int_equal(stat(f, &sb), 0);
  FILE *fp = fopen(f, "r+b");
  assert_non_null(fp);
  /* Flip bytes inside the deflate data; either the decoder or the CRC must object. */
  for (long at = sb.st_size / 2; at < sb.st_size / 2 + 4; at++) {
    fseek(fp, at, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, at, SEEK_SET);
    fputc(c ^ 0x5a, fp);
  }
  fclose(fp);
  expect_data_error("mnist", dir, f, "gzip");
  free(f);
}

static void test_idx_gzip_stream_cut(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  char *f = path_in(dir, "train-labels-idx1-ubyte.gz");
  struct stat sb;
  assert_int_equal(stat(f, &sb), 0);
  /* Drop the 8-byte trailer (CRC and length): all data decodes but the stream is incomplete. */
  assert_int_equal(truncate(f, sb.st_size - 8), 0);
  expect_data_error("mnist", dir, f, "gzip");
  free(f);
}

/* Bytes after the end of the gzip stream (gzread would stop there silently) are an error,
 * as trailing bytes inside the data are. */
static void test_idx_gzip_trailing_garbage(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  char *f = path_in(dir, "t10k-labels-idx1-ubyte.gz");
  FILE *fp = fopen(f, "ab");
  assert_non_null(fp);
  fputs("junk", fp);
  fclose(fp);
  expect_data_error("mnist", dir, f, "trailing bytes: 4 byte(s) after the end of the gzip stream");
  free(f);
}

/* Two gzip members one after the other are one stream, as gzip -d reads them. */
static void test_idx_gzip_two_members(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  char *f = path_in(dir, "train-images-idx3-ubyte.gz");
  bytes b = idx_images(1, 0x803, TRAIN_N, 28, 28);
  const size_t half = b.len / 2;
  bytes first = {b.data, half}, second = {b.data + half, b.len - half};
  char *g = path_in(dir, "second.gz");
  write_gz(f, &first);
  write_gz(g, &second);
  FILE *out = fopen(f, "ab"), *in = fopen(g, "rb");
  assert_non_null(out);
  assert_non_null(in);
  int c;
  while ((c = fgetc(in)) != EOF) fputc(c, out);
  fclose(in);
  fclose(out);
  free(b.data);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "mnist", dir), DT_OK);
  check_idx_split(&ds.train, 1, TRAIN_N);
  dt_dataset_free(&ds);
  free(f);
  free(g);
}

static long max_rss_kb(void) {
  struct rusage ru;
  assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
  return ru.ru_maxrss;
}

/* A small gzip file whose header claims 2^31 - 1 images and that expands to 256 MiB of
 * zeros: refused at the header (more than the 60000 of the official split), before reading
 * or allocating anything of the sort. Runs before the real Fashion-MNIST raises the peak. */
static void test_idx_huge_count_gz(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  char *f = path_in(dir, "train-images-idx3-ubyte.gz");
  gzFile gz = gzopen(f, "wb1");
  assert_non_null(gz);
  uint8_t head[16];
  put_be32(head, 0x803);
  put_be32(head + 4, 0x7fffffffu);
  put_be32(head + 8, 28);
  put_be32(head + 12, 28);
  assert_int_equal(gzwrite(gz, head, 16), 16);
  static uint8_t zeros[1 << 20];
  for (int i = 0; i < 256; i++) assert_int_equal(gzwrite(gz, zeros, sizeof zeros), (int)sizeof zeros);
  assert_int_equal(gzclose(gz), Z_OK);
  const long before = max_rss_kb();
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "mnist", dir), DT_ERR_DATA);
  const long grown = max_rss_kb() - before;
  if (grown > 32 * 1024) fail_msg("reading the file raised the peak RSS by %ld KiB", grown);
  expect_data_error("mnist", dir, f, "header says 2147483647 images (expected 1 to 60000)");
  free(f);
}

static void test_idx_raw_named_gz(void **state) {
  const char *dir = *state;
  write_idx_set(dir, true);
  emit(dir, "t10k-images-idx3-ubyte.gz", idx_images(2, 0x803, TEST_N, 28, 28), false);
  char *f = path_in(dir, "t10k-images-idx3-ubyte.gz");
  expect_data_error("mnist", dir, f, "not a gzip file");
  free(f);
}

/* ---- CIFAR ---- */

static const int cifar10_train_counts[5] = {3, 4, 5, 6, 7};

static bytes cifar_file(int tag, int records, int label_bytes) {
  bytes b;
  size_t rec = (size_t)label_bytes + 3072;
  b.len = rec * (size_t)records;
  b.data = malloc(b.len);
  for (int r = 0; r < records; r++) {
    uint8_t *p = b.data + rec * (size_t)r;
    if (label_bytes == 1) {
      p[0] = label_of(tag, r, 10);
    } else {
      p[0] = label_of(tag + 5, r, 20);
      p[1] = label_of(tag, r, 100);
    }
    for (size_t i = 0; i < 3072; i++) p[label_bytes + i] = pixel_of(tag + r, i);
  }
  return b;
}

static void write_cifar10(const char *dir) {
  char name[32];
  for (int k = 0; k < 5; k++) {
    snprintf(name, sizeof name, "data_batch_%d.bin", k + 1);
    emit(dir, name, cifar_file(10 + k, cifar10_train_counts[k], 1), false);
  }
  emit(dir, "test_batch.bin", cifar_file(20, 9, 1), false);
}

static void check_cifar_images(const dt_split *s, int at, int tag, int records, int classes) {
  for (int r = 0; r < records; r++) {
    assert_int_equal(s->labels[at + r], label_of(tag, r, classes));
    const uint8_t *img = s->images + (size_t)(at + r) * 3072;
    for (size_t i = 0; i < 3072; i++)
      if (img[i] != pixel_of(tag + r, i)) fail_msg("image %d pixel %zu differs", at + r, i);
  }
}

static void check_cifar10(const dt_dataset *ds) {
  assert_int_equal(ds->train.count, 3 + 4 + 5 + 6 + 7);
  assert_int_equal(ds->train.channels, 3);
  assert_int_equal(ds->train.height, 32);
  assert_int_equal(ds->train.width, 32);
  int at = 0;
  for (int k = 0; k < 5; k++) {
    check_cifar_images(&ds->train, at, 10 + k, cifar10_train_counts[k], 10);
    at += cifar10_train_counts[k];
  }
  assert_int_equal(ds->test.count, 9);
  check_cifar_images(&ds->test, 0, 20, 9, 10);
}

static void test_cifar10_roundtrip(void **state) {
  const char *dir = *state;
  write_cifar10(dir);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "cifar10", dir), DT_OK);
  assert_int_equal(ds.classes, 10);
  check_cifar10(&ds);
  dt_dataset_free(&ds);
}

static void test_cifar10_nested_dir(void **state) {
  const char *dir = *state;
  char *sub = path_in(dir, "cifar-10-batches-bin");
  assert_int_equal(mkdir(sub, 0755), 0);
  write_cifar10(sub);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "cifar10", dir), DT_OK);
  check_cifar10(&ds);
  dt_dataset_free(&ds);
  free(sub);
}

static void test_cifar100_roundtrip(void **state) {
  const char *dir = *state;
  char *sub = path_in(dir, "cifar-100-binary");
  assert_int_equal(mkdir(sub, 0755), 0);
  emit(sub, "train.bin", cifar_file(30, 25, 2), false);
  emit(sub, "test.bin", cifar_file(40, 11, 2), false);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "cifar100", dir), DT_OK);
  assert_int_equal(ds.classes, 100);
  assert_int_equal(ds.train.count, 25);
  assert_int_equal(ds.test.count, 11);
  /* Fine labels (second byte) are the ones kept. */
  check_cifar_images(&ds.train, 0, 30, 25, 100);
  check_cifar_images(&ds.test, 0, 40, 11, 100);
  dt_dataset_free(&ds);
  /* Also straight in dir. */
  emit(dir, "train.bin", cifar_file(31, 3, 2), false);
  emit(dir, "test.bin", cifar_file(41, 2, 2), false);
  assert_int_equal(dt_dataset_load(&ds, "cifar100", dir), DT_OK);
  check_cifar_images(&ds.train, 0, 31, 3, 100);
  check_cifar_images(&ds.test, 0, 41, 2, 100);
  dt_dataset_free(&ds);
  free(sub);
}

static void test_cifar_size_not_multiple(void **state) {
  const char *dir = *state;
  write_cifar10(dir);
  bytes b = cifar_file(11, 4, 1);
  b.len -= 1;
  emit(dir, "data_batch_2.bin", b, false);
  char *f = path_in(dir, "data_batch_2.bin");
  expect_data_error("cifar10", dir, f, "not a whole number of 3073-byte");
  free(f);
}

static void test_cifar100_size_not_multiple(void **state) {
  const char *dir = *state;
  emit(dir, "train.bin", cifar_file(30, 5, 2), false);
  bytes b = cifar_file(40, 3, 1); /* CIFAR-10 records in a CIFAR-100 file */
  emit(dir, "test.bin", b, false);
  char *f = path_in(dir, "test.bin");
  expect_data_error("cifar100", dir, f, "3074-byte");
  free(f);
}

static void test_cifar_too_many_records(void **state) {
  const char *dir = *state;
  write_cifar10(dir);
  bytes b;
  b.len = (size_t)10001 * 3073;
  b.data = calloc(b.len, 1);
  emit(dir, "test_batch.bin", b, false);
  char *f = path_in(dir, "test_batch.bin");
  expect_data_error("cifar10", dir, f, "10001 records");
  free(f);
}

static void test_cifar_label_out_of_range(void **state) {
  const char *dir = *state;
  write_cifar10(dir);
  bytes b = cifar_file(12, 5, 1);
  b.data[3073 * 2] = 10;
  emit(dir, "data_batch_3.bin", b, false);
  char *f = path_in(dir, "data_batch_3.bin");
  expect_data_error("cifar10", dir, f, "label 10 of record 2 is out of range");
  free(f);

  emit(dir, "train.bin", cifar_file(30, 5, 2), false);
  b = cifar_file(40, 4, 2);
  b.data[3074 * 3 + 1] = 100;
  emit(dir, "test.bin", b, false);
  f = path_in(dir, "test.bin");
  expect_data_error("cifar100", dir, f, "fine label 100 of record 3");
  free(f);
}

static void test_cifar_missing_file(void **state) {
  const char *dir = *state;
  write_cifar10(dir);
  char *f = path_in(dir, "data_batch_4.bin");
  assert_int_equal(unlink(f), 0);
  expect_data_error("cifar10", dir, f, "data.dir");
  free(f);
  char *g = path_in(dir, "cifar-100-binary/train.bin");
  expect_data_error("cifar100", dir, g, "data.dir");
  free(g);
}

/* ---- limit and the real Fashion-MNIST ---- */

static void test_limit(void **state) {
  const char *dir = *state;
  write_idx_set(dir, false);
  dt_dataset ds;
  assert_int_equal(dt_dataset_load(&ds, "mnist", dir), DT_OK);
  dt_dataset_limit(&ds, 0, 0);
  assert_int_equal(ds.train.count, TRAIN_N);
  assert_int_equal(ds.test.count, TEST_N);
  dt_dataset_limit(&ds, TRAIN_N + 10, 7);
  assert_int_equal(ds.train.count, TRAIN_N);
  assert_int_equal(ds.test.count, 7);
  dt_dataset_limit(&ds, 12, 0);
  assert_int_equal(ds.train.count, 12);
  assert_int_equal(ds.test.count, 7);
  check_idx_split(&ds.train, 1, 12);
  check_idx_split(&ds.test, 2, 7);
  dt_dataset_free(&ds);
}

static void test_fashion_mnist_real(void **state) {
  (void)state;
  const char *dir = dt_dataset_default_dir("fashion_mnist");
  struct stat sb;
  if (stat(dir, &sb) != 0) {
    print_message("  %s not present, skipping\n", dir);
    skip();
  }
  dt_dataset ds;
  dt_error_clear();
  dt_status st = dt_dataset_load(&ds, "fashion_mnist", NULL);
  if (st != DT_OK) fail_msg("%s", dt_error_message());
  assert_int_equal(ds.train.count, 60000);
  assert_int_equal(ds.test.count, 10000);
  assert_int_equal(ds.train.channels, 1);
  assert_int_equal(ds.train.height, 28);
  assert_int_equal(ds.train.width, 28);
  int train_hist[10] = {0}, test_hist[10] = {0};
  for (int i = 0; i < ds.train.count; i++) train_hist[ds.train.labels[i]]++;
  for (int i = 0; i < ds.test.count; i++) test_hist[ds.test.labels[i]]++;
  for (int k = 0; k < 10; k++) {
    assert_int_equal(train_hist[k], 6000);
    assert_int_equal(test_hist[k], 1000);
  }
  /* The mean pixel must match the reference statistic the normalisation uses. */
  double sum = 0;
  for (size_t i = 0; i < (size_t)60000 * 784; i++) sum += ds.train.images[i];
  double mean = sum / (60000.0 * 784.0 * 255.0);
  assert_true(mean > 0.2855 && mean < 0.2865);
  dt_dataset_free(&ds);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_describe),
      T(test_idx_raw_roundtrip),
      T(test_idx_gz_roundtrip),
      T(test_idx_prefers_gz),
      T(test_idx_bad_magic),
      T(test_idx_bad_label_magic),
      T(test_idx_wrong_dimensions),
      T(test_idx_truncated),
      T(test_idx_truncated_gz),
      T(test_idx_truncated_header),
      T(test_idx_trailing_bytes),
      T(test_idx_trailing_bytes_raw),
      T(test_idx_count_mismatch),
      T(test_idx_label_out_of_range),
      T(test_idx_missing_file),
      T(test_idx_corrupt_gzip),
      T(test_idx_gzip_stream_cut),
      T(test_idx_raw_named_gz),
      T(test_idx_gzip_trailing_garbage),
      T(test_idx_gzip_two_members),
      T(test_idx_huge_count_gz),
      T(test_cifar10_roundtrip),
      T(test_cifar10_nested_dir),
      T(test_cifar100_roundtrip),
      T(test_cifar_size_not_multiple),
      T(test_cifar100_size_not_multiple),
      T(test_cifar_too_many_records),
      T(test_cifar_label_out_of_range),
      T(test_cifar_missing_file),
      T(test_limit),
      cmocka_unit_test(test_fashion_mnist_real),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
