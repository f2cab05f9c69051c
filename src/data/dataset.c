/* dataset.c: readers for the dataset files named in dataset.h (IDX for the MNIST family,
 * the CIFAR-10/100 binary versions) into one in-memory dt_dataset of uint8 pixels.
 *
 * Every file is checked before it is trusted: magic number, image size, record count, exact
 * length (truncation and trailing bytes are both errors; for gzip the decompressed length and
 * the integrity of the stream) and label range. A problem is DT_ERR_DATA with one message
 * that names the file. Buffers grow with the bytes actually read, so a header that claims a
 * huge count cannot make us allocate more than the file holds, and no header may claim more
 * items than the official split has (as for CIFAR), which bounds what a small gzip file that
 * expands to gigabytes can make us read. Bytes after the end of a gzip stream are an error.
 *
 * Small files are accepted on purpose, so that tests can write their own: an IDX pair may hold
 * any positive count that agrees between the two headers and the file lengths, and a CIFAR
 * file may hold fewer records than the official 10000 (50000 for CIFAR-100 train.bin) as long
 * as its size is a whole number of records. More records than the official count is an
 * error. */
#include "data/dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

typedef enum { DT_FORMAT_IDX, DT_FORMAT_CIFAR10, DT_FORMAT_CIFAR100 } dt_format;

typedef struct {
  const char *name;
  const char *default_dir;
  dt_format format;
  int classes, channels, size;
  float mean[3], std[3];
  bool hflip;
  int train_count, test_count; /* the official split sizes, for describe */
} dt_dataset_info;

/* docs/reference-experiments.md "Datasets" (statistics) and "Code generations" (flip for CIFAR and
 * Fashion-MNIST only). */
static const dt_dataset_info g_datasets[] = {
    {"fashion_mnist", "/usr/share/datasets/fashion-mnist", DT_FORMAT_IDX, 10, 1, 28,
     {0.2860f}, {0.3530f}, true, 60000, 10000},
    {"mnist", "data/mnist", DT_FORMAT_IDX, 10, 1, 28, {0.1307f}, {0.3081f}, false, 60000, 10000},
    {"kmnist", "data/kmnist", DT_FORMAT_IDX, 10, 1, 28, {0.1904f}, {0.3475f}, false, 60000, 10000},
    {"cifar10", "data/cifar10", DT_FORMAT_CIFAR10, 10, 3, 32, {0.4914f, 0.4822f, 0.4465f},
     {0.2470f, 0.2435f, 0.2616f}, true, 50000, 10000},
    {"cifar100", "data/cifar100", DT_FORMAT_CIFAR100, 100, 3, 32, {0.5071f, 0.4865f, 0.4409f},
     {0.2673f, 0.2564f, 0.2762f}, true, 50000, 10000},
};

static const dt_dataset_info *dt_dataset_find(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < DT_ARRAY_LEN(g_datasets); i++)
    if (strcmp(g_datasets[i].name, name) == 0) return &g_datasets[i];
  return NULL;
}

const char *dt_dataset_default_dir(const char *name) {
  const dt_dataset_info *info = dt_dataset_find(name);
  if (info) return info->default_dir;
  /* Unknown names still get the documented data/<name>; one buffer per thread. */
  static _Thread_local char buf[DT_PATH_MAX];
  snprintf(buf, sizeof buf, "data/%s", name ? name : "");
  return buf;
}

dt_status dt_dataset_describe(const char *name, dt_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  const dt_dataset_info *info = dt_dataset_find(name);
  if (!info)
    return dt_error_set(DT_ERR_CONFIG,
                        "unknown dataset '%s' (expected fashion_mnist, mnist, kmnist, cifar10 or "
                        "cifar100)",
                        name ? name : "(null)");
  ds->name = info->name;
  ds->classes = info->classes;
  for (int c = 0; c < 3; c++) {
    ds->mean[c] = c < info->channels ? info->mean[c] : 0.0f;
    ds->std[c] = c < info->channels ? info->std[c] : 1.0f;
  }
  ds->default_hflip = info->hflip;
  dt_split *splits[2] = {&ds->train, &ds->test};
  for (int i = 0; i < 2; i++) {
    splits[i]->count = 0;
    splits[i]->channels = info->channels;
    splits[i]->height = info->size;
    splits[i]->width = info->size;
    splits[i]->images = NULL;
    splits[i]->labels = NULL;
  }
  return DT_OK;
}

static bool dt_path_join(char *out, const char *dir, const char *sub, const char *name) {
  int n = sub ? snprintf(out, DT_PATH_MAX, "%s/%s/%s", dir, sub, name)
              : snprintf(out, DT_PATH_MAX, "%s/%s", dir, name);
  return n >= 0 && n < DT_PATH_MAX;
}

static bool dt_path_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static dt_status dt_path_too_long(const char *dir) {
  return dt_error_set(DT_ERR_DATA, "dataset directory %s: path too long", dir);
}

/* ---- IDX (MNIST family) ---- */

#define DT_IDX_IMAGES_MAGIC 0x00000803u
#define DT_IDX_LABELS_MAGIC 0x00000801u
#define DT_IDX_SIDE 28

static uint32_t dt_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* An IDX file, raw or gzip. gzip is decoded with inflate rather than gzread, which stops
 * quietly at bytes after the end of the gzip stream: here they are an error, like bytes after
 * the data. Several gzip members one after the other (what gzip -d accepts) are one stream. */
typedef struct {
  FILE *f;
  const char *path;
  bool gz;
  bool end;    /* gzip: the last member ended at the end of the file */
  z_stream zs; /* gzip: initialised by dt_src_open */
  uint8_t in[1 << 16];
} dt_src;

/* Refill the input of a gzip source; false on a read error (message set). */
static dt_status dt_src_fill(dt_src *s) {
  size_t n = fread(s->in, 1, sizeof s->in, s->f);
  if (n == 0 && ferror(s->f))
    return dt_error_set(DT_ERR_DATA, "dataset file %s: read error: %s", s->path, strerror(errno));
  s->zs.next_in = s->in;
  s->zs.avail_in = (uInt)n;
  return DT_OK;
}

static dt_status dt_src_open(dt_src *s, const char *path, bool gz) {
  memset(s, 0, sizeof *s);
  s->path = path;
  s->gz = gz;
  errno = 0;
  s->f = fopen(path, "rb");
  if (!s->f)
    return dt_error_set(DT_ERR_DATA, "dataset file %s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory");
  if (!gz) return DT_OK;
  if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK) { /* gzip wrapper only */
    fclose(s->f);
    s->f = NULL;
    return dt_error_set(DT_ERR_NOMEM, "dataset file %s: out of memory", path);
  }
  dt_status st = dt_src_fill(s);
  if (st == DT_OK && (s->zs.avail_in < 2 || s->in[0] != 0x1f || s->in[1] != 0x8b))
    st = dt_error_set(DT_ERR_DATA, "dataset file %s: not a gzip file (empty, or raw data named .gz)",
                      path);
  if (st != DT_OK) {
    inflateEnd(&s->zs);
    fclose(s->f);
    s->f = NULL;
  }
  return st;
}

static void dt_src_close(dt_src *s) {
  if (!s->f) return;
  if (s->gz) inflateEnd(&s->zs);
  fclose(s->f);
  s->f = NULL;
}

/* Read up to `want` bytes; *got = bytes read, fewer than `want` only at the end of the data.
 * A read error, a corrupt or cut gzip stream and bytes after it are errors (message set). */
static dt_status dt_src_read(dt_src *s, void *buf, size_t want, size_t *got) {
  *got = 0;
  if (!s->gz) {
    *got = fread(buf, 1, want, s->f);
    if (*got < want && ferror(s->f))
      return dt_error_set(DT_ERR_DATA, "dataset file %s: read error: %s", s->path, strerror(errno));
    return DT_OK;
  }
  while (*got < want && !s->end) {
    if (s->zs.avail_in == 0) {
      dt_status st = dt_src_fill(s);
      if (st != DT_OK) return st;
      if (s->zs.avail_in == 0)
        return dt_error_set(DT_ERR_DATA,
                            "dataset file %s: corrupt or truncated gzip stream (unexpected end "
                            "of file)",
                            s->path);
    }
    const size_t chunk = DT_MIN(want - *got, (size_t)1 << 30);
    s->zs.next_out = (Bytef *)buf + *got;
    s->zs.avail_out = (uInt)chunk;
    const int r = inflate(&s->zs, Z_NO_FLUSH);
    *got += chunk - s->zs.avail_out;
    if (r == Z_STREAM_END) {
      /* The end of the file, another gzip member, or trailing bytes. */
      if (s->zs.avail_in == 0) {
        dt_status st = dt_src_fill(s);
        if (st != DT_OK) return st;
      }
      if (s->zs.avail_in == 0) {
        s->end = true;
      } else if (s->zs.next_in[0] != 0x1f) {
        long rest = (long)s->zs.avail_in;
        long at = ftell(s->f);
        if (at >= 0 && fseek(s->f, 0, SEEK_END) == 0) rest += ftell(s->f) - at;
        return dt_error_set(DT_ERR_DATA,
                            "dataset file %s: trailing bytes: %ld byte(s) after the end of the "
                            "gzip stream",
                            s->path, rest);
      } else {
        inflateReset(&s->zs);
      }
    } else if (r != Z_OK && r != Z_BUF_ERROR) {
      if (r == Z_MEM_ERROR) return dt_error_set(DT_ERR_NOMEM, "dataset file %s: out of memory", s->path);
      return dt_error_set(DT_ERR_DATA, "dataset file %s: corrupt or truncated gzip stream (%s)",
                          s->path, s->zs.msg ? s->zs.msg : "zlib error");
    }
  }
  return DT_OK;
}

/* Resolve base (for example train-images-idx3-ubyte) in dir, preferring base.gz. */
static dt_status dt_idx_resolve(const char *dir, const char *base, char *path, bool *gz) {
  char raw[DT_PATH_MAX], packed[DT_PATH_MAX + 4];
  if (!dt_path_join(raw, dir, NULL, base)) return dt_path_too_long(dir);
  snprintf(packed, sizeof packed, "%s.gz", raw);
  if (strlen(packed) < DT_PATH_MAX && dt_path_exists(packed)) {
    strcpy(path, packed);
    *gz = true;
    return DT_OK;
  }
  if (dt_path_exists(raw)) {
    strcpy(path, raw);
    *gz = false;
    return DT_OK;
  }
  return dt_error_set(DT_ERR_DATA,
                      "dataset file not found: tried %s and %s (set data.dir to the directory "
                      "that holds the IDX files)",
                      packed, raw);
}

/* One IDX file: images (magic 0x803, count x 28 x 28) or labels (magic 0x801, count).
 * On success *data holds count * item bytes (malloc'ed) and path the file read. */
static dt_status dt_idx_read(const char *dir, const char *base, bool images, int max_count,
                             char *path, int *count, uint8_t **data) {
  *data = NULL;
  *count = 0;
  bool is_gz = false;
  dt_status st = dt_idx_resolve(dir, base, path, &is_gz);
  if (st != DT_OK) return st;
  const char *kind = images ? "images" : "labels";
  const uint32_t magic_want = images ? DT_IDX_IMAGES_MAGIC : DT_IDX_LABELS_MAGIC;
  const size_t header = images ? 16 : 8;
  const char *length_word = is_gz ? "decompressed file" : "file";

  dt_src *src = dt_xmalloc(sizeof *src);
  st = dt_src_open(src, path, is_gz);
  if (st != DT_OK) {
    free(src);
    return st;
  }
  uint8_t *buf = NULL;
  uint8_t *scratch = NULL;

  uint8_t head[16];
  size_t got = 0;
  st = dt_src_read(src, head, header, &got);
  if (st != DT_OK) goto done;
  if (got < header) {
    st = dt_error_set(DT_ERR_DATA,
                      "dataset file %s: truncated: the %s has %zu bytes, less than the %zu-byte "
                      "IDX %s header",
                      path, length_word, got, header, kind);
    goto done;
  }
  uint32_t magic = dt_be32(head);
  if (magic != magic_want) {
    st = dt_error_set(DT_ERR_DATA,
                      "dataset file %s: bad magic number 0x%08x (expected 0x%08x for IDX %s)", path,
                      magic, magic_want, kind);
    goto done;
  }
  uint32_t n = dt_be32(head + 4);
  size_t item = 1;
  if (images) {
    uint32_t rows = dt_be32(head + 8), cols = dt_be32(head + 12);
    if (rows != DT_IDX_SIDE || cols != DT_IDX_SIDE) {
      st = dt_error_set(DT_ERR_DATA,
                        "dataset file %s: images are %ux%u, expected %dx%d", path, rows, cols,
                        DT_IDX_SIDE, DT_IDX_SIDE);
      goto done;
    }
    item = (size_t)DT_IDX_SIDE * DT_IDX_SIDE;
  }
  /* At most the official split's count (as for CIFAR): a header cannot make us read more. */
  if (n == 0 || n > (uint32_t)max_count) {
    st = dt_error_set(DT_ERR_DATA, "dataset file %s: header says %u %s (expected 1 to %d)", path,
                      n, kind, max_count);
    goto done;
  }
  const size_t want = (size_t)n * item;
  char what[128];
  if (images)
    snprintf(what, sizeof what, "%u images of %dx%d (%zu bytes)", n, DT_IDX_SIDE, DT_IDX_SIDE,
             header + want);
  else
    snprintf(what, sizeof what, "%u labels (%zu bytes)", n, header + want);

  /* A raw file's length is known before anything is allocated. */
  struct stat sb;
  if (!is_gz && fstat(fileno(src->f), &sb) == 0 && S_ISREG(sb.st_mode) &&
      (size_t)sb.st_size != header + want) {
    st = dt_error_set(DT_ERR_DATA, "dataset file %s: %s: header says %s but the file has %zu bytes",
                      path, (size_t)sb.st_size < header + want ? "truncated" : "trailing bytes", what,
                      (size_t)sb.st_size);
    goto done;
  }
  /* Grow with the data actually present rather than trusting the header's count. */
  size_t cap = DT_MIN(want, (size_t)1 << 20), have = 0;
  buf = malloc(cap);
  if (!buf) {
    st = dt_error_set(DT_ERR_NOMEM, "dataset file %s: out of memory", path);
    goto done;
  }
  for (;;) {
    st = dt_src_read(src, buf + have, cap - have, &got);
    if (st != DT_OK) goto done;
    have += got;
    if (have < cap || cap == want) break;
    size_t grown = DT_MIN(want, cap * 2);
    uint8_t *p = realloc(buf, grown);
    if (!p) {
      st = dt_error_set(DT_ERR_NOMEM, "dataset file %s: out of memory", path);
      goto done;
    }
    buf = p;
    cap = grown;
  }
  if (have < want) {
    st = dt_error_set(DT_ERR_DATA, "dataset file %s: truncated: header says %s but the %s has %zu bytes",
                      path, what, length_word, header + have);
    goto done;
  }
  /* Count what follows the payload so the message can give the real length. */
  size_t extra = 0;
  scratch = malloc(1 << 16);
  if (!scratch) {
    st = dt_error_set(DT_ERR_NOMEM, "dataset file %s: out of memory", path);
    goto done;
  }
  for (;;) {
    st = dt_src_read(src, scratch, 1 << 16, &got);
    if (st != DT_OK) goto done;
    extra += got;
    if (got < (1 << 16)) break;
  }
  if (extra > 0) {
    st = dt_error_set(DT_ERR_DATA,
                      "dataset file %s: trailing bytes: header says %s but the %s has %zu bytes",
                      path, what, length_word, header + want + extra);
    goto done;
  }
  *data = buf;
  buf = NULL;
  *count = (int)n;
  st = DT_OK;

done:
  free(scratch);
  free(buf);
  dt_src_close(src);
  free(src);
  return st;
}

static dt_status dt_idx_split(const char *dir, const char *prefix, int classes, int max_count,
                              dt_split *split) {
  char images_base[64], labels_base[64];
  snprintf(images_base, sizeof images_base, "%s-images-idx3-ubyte", prefix);
  snprintf(labels_base, sizeof labels_base, "%s-labels-idx1-ubyte", prefix);
  char images_path[DT_PATH_MAX + 4], labels_path[DT_PATH_MAX + 4];
  int n_images = 0, n_labels = 0;
  uint8_t *images = NULL, *labels = NULL;
  dt_status st = dt_idx_read(dir, images_base, true, max_count, images_path, &n_images, &images);
  if (st == DT_OK)
    st = dt_idx_read(dir, labels_base, false, max_count, labels_path, &n_labels, &labels);
  if (st == DT_OK && n_images != n_labels)
    st = dt_error_set(DT_ERR_DATA, "dataset files %s and %s: %d images but %d labels", images_path,
                      labels_path, n_images, n_labels);
  for (int i = 0; st == DT_OK && i < n_labels; i++)
    if (labels[i] >= classes)
      st = dt_error_set(DT_ERR_DATA,
                        "dataset file %s: label %u of item %d is out of range (%d classes)",
                        labels_path, labels[i], i, classes);
  if (st != DT_OK) {
    free(images);
    free(labels);
    return st;
  }
  split->count = n_images;
  split->images = images;
  split->labels = labels;
  return DT_OK;
}

/* ---- CIFAR binary versions ---- */

#define DT_CIFAR_PIXELS 3072 /* (3, 32, 32) channel-major */

typedef struct {
  int label_bytes;    /* 1 (CIFAR-10) or 2 (coarse, fine: CIFAR-100) */
  int label_max[2];   /* exclusive bound of each label byte */
  const char *subdir; /* where the official tarball unpacks */
  const char *title;
} dt_cifar_format;

static const dt_cifar_format g_cifar10 = {1, {10, 0}, "cifar-10-batches-bin", "CIFAR-10"};
static const dt_cifar_format g_cifar100 = {2, {20, 100}, "cifar-100-binary", "CIFAR-100"};

/* Append the records of one file to split (which has room for them at split->count). */
static dt_status dt_cifar_read_file(const dt_cifar_format *fmt, const char *path, long records,
                                    dt_split *split) {
  const size_t rec = (size_t)fmt->label_bytes + DT_CIFAR_PIXELS;
  FILE *f = fopen(path, "rb");
  if (!f) return dt_error_set(DT_ERR_DATA, "dataset file %s: cannot open: %s", path, strerror(errno));
  uint8_t *buf = malloc(rec * 1024);
  if (!buf) {
    fclose(f);
    return dt_error_set(DT_ERR_NOMEM, "dataset file %s: out of memory", path);
  }
  dt_status st = DT_OK;
  long done = 0;
  while (st == DT_OK && done < records) {
    size_t batch = (size_t)DT_MIN(records - done, 1024L);
    if (fread(buf, rec, batch, f) != batch) {
      st = dt_error_set(DT_ERR_DATA, "dataset file %s: read error or file shrank while reading",
                        path);
      break;
    }
    for (size_t r = 0; r < batch && st == DT_OK; r++) {
      const uint8_t *p = buf + r * rec;
      for (int b = 0; b < fmt->label_bytes; b++)
        if (p[b] >= fmt->label_max[b])
          st = dt_error_set(DT_ERR_DATA,
                            "dataset file %s: %slabel %u of record %ld is out of range (%d classes)",
                            path, fmt->label_bytes == 2 ? (b == 0 ? "coarse " : "fine ") : "",
                            p[b], done + (long)r, fmt->label_max[b]);
      long at = split->count + done + (long)r;
      split->labels[at] = p[fmt->label_bytes - 1]; /* CIFAR-100: the fine label */
      memcpy(split->images + (size_t)at * DT_CIFAR_PIXELS, p + fmt->label_bytes, DT_CIFAR_PIXELS);
    }
    done += (long)batch;
  }
  free(buf);
  fclose(f);
  if (st == DT_OK) split->count += (int)records;
  return st;
}

/* Size check of one file: a positive whole number of records, at most `max_records`. */
static dt_status dt_cifar_count(const dt_cifar_format *fmt, const char *path, long max_records,
                                long *records) {
  const long rec = fmt->label_bytes + DT_CIFAR_PIXELS;
  struct stat sb;
  if (stat(path, &sb) != 0)
    return dt_error_set(DT_ERR_DATA,
                        "dataset file %s: %s (set data.dir to the directory that holds the %s "
                        "binary files)",
                        path, errno == ENOENT ? "not found" : strerror(errno), fmt->title);
  if (!S_ISREG(sb.st_mode))
    return dt_error_set(DT_ERR_DATA, "dataset file %s: not a regular file", path);
  long size = (long)sb.st_size;
  if (size % rec != 0)
    return dt_error_set(DT_ERR_DATA,
                        "dataset file %s: size %ld bytes is not a whole number of %ld-byte %s "
                        "records",
                        path, size, rec, fmt->title);
  if (size == 0) return dt_error_set(DT_ERR_DATA, "dataset file %s: empty", path);
  if (size / rec > max_records)
    return dt_error_set(DT_ERR_DATA, "dataset file %s: %ld records, more than the %ld of a %s file",
                        path, size / rec, max_records, fmt->title);
  *records = size / rec;
  return DT_OK;
}

static dt_status dt_cifar_split(const dt_cifar_format *fmt, const char *base, const char *const *files,
                                int nfiles, long max_records, dt_split *split) {
  char paths[6][DT_PATH_MAX];
  long records[6];
  long total = 0;
  for (int i = 0; i < nfiles; i++) {
    if (!dt_path_join(paths[i], base, NULL, files[i])) return dt_path_too_long(base);
    dt_status st = dt_cifar_count(fmt, paths[i], max_records, &records[i]);
    if (st != DT_OK) return st;
    total += records[i];
  }
  split->count = 0;
  split->images = malloc((size_t)total * DT_CIFAR_PIXELS);
  split->labels = malloc((size_t)total);
  if (!split->images || !split->labels)
    return dt_error_set(DT_ERR_NOMEM, "dataset %s: out of memory for %ld images", base, total);
  for (int i = 0; i < nfiles; i++) {
    dt_status st = dt_cifar_read_file(fmt, paths[i], records[i], split);
    if (st != DT_OK) return st;
  }
  return DT_OK;
}

static dt_status dt_cifar_load(dt_dataset *ds, const dt_cifar_format *fmt, const char *dir) {
  static const char *const train10[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                        "data_batch_4.bin", "data_batch_5.bin"};
  static const char *const test10[] = {"test_batch.bin"};
  static const char *const train100[] = {"train.bin"};
  static const char *const test100[] = {"test.bin"};
  const bool is10 = fmt == &g_cifar10;
  const char *probe = is10 ? train10[0] : train100[0];
  /* The files may sit in dir itself or in the directory the official tarball creates. */
  char flat[DT_PATH_MAX], nested[DT_PATH_MAX], base[DT_PATH_MAX];
  if (!dt_path_join(flat, dir, NULL, probe) || !dt_path_join(nested, dir, fmt->subdir, probe) ||
      !dt_path_join(base, dir, fmt->subdir, ""))
    return dt_path_too_long(dir);
  if (dt_path_exists(flat)) {
    snprintf(base, sizeof base, "%s", dir);
  } else if (dt_path_exists(nested)) {
    base[strlen(base) - 1] = 0; /* drop the trailing '/' */
  } else {
    return dt_error_set(DT_ERR_DATA,
                        "dataset file not found: tried %s and %s (set data.dir to the directory "
                        "that holds the %s binary files)",
                        flat, nested, fmt->title);
  }
  dt_status st = is10 ? dt_cifar_split(fmt, base, train10, 5, 10000, &ds->train)
                      : dt_cifar_split(fmt, base, train100, 1, 50000, &ds->train);
  if (st != DT_OK) return st;
  return is10 ? dt_cifar_split(fmt, base, test10, 1, 10000, &ds->test)
              : dt_cifar_split(fmt, base, test100, 1, 10000, &ds->test);
}

dt_status dt_dataset_load(dt_dataset *ds, const char *name, const char *dir) {
  dt_status st = dt_dataset_describe(name, ds);
  if (st != DT_OK) return st;
  if (!dir || !*dir) dir = dt_dataset_default_dir(name);
  const dt_dataset_info *info = dt_dataset_find(name);
  switch (info->format) {
  case DT_FORMAT_IDX:
    st = dt_idx_split(dir, "train", ds->classes, info->train_count, &ds->train);
    if (st == DT_OK) st = dt_idx_split(dir, "t10k", ds->classes, info->test_count, &ds->test);
    break;
  case DT_FORMAT_CIFAR10: st = dt_cifar_load(ds, &g_cifar10, dir); break;
  case DT_FORMAT_CIFAR100: st = dt_cifar_load(ds, &g_cifar100, dir); break;
  }
  if (st != DT_OK) dt_dataset_free(ds);
  return st;
}

void dt_dataset_limit(dt_dataset *ds, int train_limit, int test_limit) {
  if (train_limit > 0 && train_limit < ds->train.count) ds->train.count = train_limit;
  if (test_limit > 0 && test_limit < ds->test.count) ds->test.count = test_limit;
}

void dt_dataset_free(dt_dataset *ds) {
  if (!ds) return;
  free(ds->train.images);
  free(ds->train.labels);
  free(ds->test.images);
  free(ds->test.labels);
  for (int k = 0; ds->class_names && k < ds->classes; k++) free(ds->class_names[k]);
  free(ds->class_names);
  memset(ds, 0, sizeof *ds);
}
