/* tfevents.c: TensorBoard event files (format in tfevents.h): a table-driven CRC-32C, a small
 * protobuf encoder for the few Event fields dtrain writes, and the record writer. Every event
 * is written as one record and flushed, so TensorBoard shows it while the run goes on. */
#define _GNU_SOURCE /* gethostname */
#include "io/tfevents.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* ---- CRC-32C ---- */

static uint32_t g_crc32c_table[256];

static void crc32c_table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    g_crc32c_table[i] = c;
  }
}

uint32_t dt_crc32c(uint32_t crc, const void *data, size_t n) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, crc32c_table_init);
  const uint8_t *p = data;
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = g_crc32c_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t dt_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- protobuf encoding ---- */

/* A growing byte buffer. */
typedef struct {
  uint8_t *p;
  size_t n, cap;
} pbuf;

static void pb_bytes(pbuf *b, const void *data, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = DT_MAX(2 * b->cap, b->n + n + 64);
    b->p = realloc(b->p, b->cap);
    DT_CHECK(b->p != NULL);
  }
  if (n) memcpy(b->p + b->n, data, n);
  b->n += n;
}

static void pb_varint(pbuf *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  do {
    tmp[n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
    v >>= 7;
  } while (v);
  pb_bytes(b, tmp, n);
}

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

static void pb_key(pbuf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void pb_le(pbuf *b, uint64_t v, int bytes) {
  uint8_t tmp[8];
  for (int i = 0; i < bytes; i++) tmp[i] = (uint8_t)(v >> (8 * i));
  pb_bytes(b, tmp, (size_t)bytes);
}

static void pb_double(pbuf *b, int field, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  pb_key(b, field, WIRE_FIXED64);
  pb_le(b, u, 8);
}

static void pb_float(pbuf *b, int field, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  pb_key(b, field, WIRE_FIXED32);
  pb_le(b, u, 4);
}

/* int32 / int64 / enum: negative values as their 64-bit two's complement (10 bytes). */
static void pb_int(pbuf *b, int field, int64_t v) {
  pb_key(b, field, WIRE_VARINT);
  pb_varint(b, (uint64_t)v);
}

static void pb_len(pbuf *b, int field, const void *data, size_t n) {
  pb_key(b, field, WIRE_LEN);
  pb_varint(b, n);
  pb_bytes(b, data, n);
}

/* Event fields, Summary, Summary.Value, Summary.Image and SessionLog numbers (tfevents.h). */
enum {
  EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5,
  EVENT_SESSION_LOG = 7,
  SUMMARY_VALUE = 1,
  VALUE_TAG = 1, VALUE_SIMPLE = 2, VALUE_IMAGE = 4,
  IMAGE_HEIGHT = 1, IMAGE_WIDTH = 2, IMAGE_COLORSPACE = 3, IMAGE_ENCODED = 4,
  SESSION_LOG_STATUS = 1, SESSION_LOG_START = 1,
};

/* The head of an Event: its wall time (now) and step. */
static void event_begin(pbuf *ev, long step) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  pb_double(ev, EVENT_WALL_TIME, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
  pb_int(ev, EVENT_STEP, step);
}

/* ---- the writer ---- */

struct dt_tfevents {
  FILE *f;
  char *path;
};

/* Print the warning once and stop writing. */
static void writer_fail(dt_tfevents *w, const char *what, int err) {
  fprintf(stderr, "dtrain: warning: TensorBoard events file %s: %s%s%s; TensorBoard output stops "
          "here (the run goes on)\n", w->path, what, err ? ": " : "", err ? strerror(err) : "");
  if (w->f) fclose(w->f);
  w->f = NULL;
}

/* Write the serialized Event `ev` as one record and flush it. */
static void write_record(dt_tfevents *w, const pbuf *ev) {
  if (!w || !w->f) return;
  uint8_t head[12], tail[4];
  const uint64_t n = ev->n;
  for (int i = 0; i < 8; i++) head[i] = (uint8_t)(n >> (8 * i));
  const uint32_t hc = dt_crc32c_mask(dt_crc32c(0, head, 8));
  const uint32_t dc = dt_crc32c_mask(dt_crc32c(0, ev->p, ev->n));
  for (int i = 0; i < 4; i++) head[8 + i] = (uint8_t)(hc >> (8 * i)), tail[i] = (uint8_t)(dc >> (8 * i));
  errno = 0;
  if (fwrite(head, 1, 12, w->f) != 12 || fwrite(ev->p, 1, ev->n, w->f) != ev->n ||
      fwrite(tail, 1, 4, w->f) != 4 || fflush(w->f) != 0)
    writer_fail(w, "writing failed", errno ? errno : EIO);
}

/* Write an Event at step holding the serialized Summary `summary`. */
static void write_summary(dt_tfevents *w, long step, const pbuf *summary) {
  pbuf ev = {0};
  event_begin(&ev, step);
  pb_len(&ev, EVENT_SUMMARY, summary->p, summary->n);
  write_record(w, &ev);
  free(ev.p);
}

/* The time stamp of the new file's name: now, or one more than the largest stamp among the
 * events files dir holds, whichever is larger. TensorBoard reads a directory's files in name
 * order; a resumed run's file must come after the interrupted run's, even within a second. */
static long name_stamp(const char *dir) {
  static const char prefix[] = "events.out.tfevents.";
  long stamp = (long)time(NULL);
  DIR *dp = opendir(dir);
  const struct dirent *e;
  while (dp && (e = readdir(dp)) != NULL) {
    if (strncmp(e->d_name, prefix, sizeof prefix - 1) != 0) continue;
    const long t = strtol(e->d_name + sizeof prefix - 1, NULL, 10);
    if (t >= stamp) stamp = t + 1;
  }
  if (dp) closedir(dp);
  return stamp;
}

dt_tfevents *dt_tfevents_open(const char *dir, long start_step) {
  dt_tfevents *w = dt_xcalloc(1, sizeof *w);
  char host[256] = "localhost";
  if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
  host[sizeof host - 1] = 0;
  const size_t len = strlen(dir) + strlen(host) + 96;
  w->path = dt_xmalloc(len);
  snprintf(w->path, len, "%s/events.out.tfevents.%ld.%s.%ld", dir, name_stamp(dir), host,
           (long)getpid());
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    writer_fail(w, "cannot create its directory", errno);
  } else {
    /* "x": a file of the same name (same second, host and pid) is never overwritten. */
    w->f = fopen(w->path, "wbx");
    if (!w->f) writer_fail(w, "cannot create it", errno);
  }
  if (!w->f) {
    dt_tfevents_close(w);
    return NULL;
  }
  pbuf ev = {0};
  event_begin(&ev, 0);
  static const char version[] = "brain.Event:2";
  pb_len(&ev, EVENT_FILE_VERSION, version, sizeof version - 1);
  write_record(w, &ev);
  ev.n = 0;
  pbuf log = {0};
  pb_int(&log, SESSION_LOG_STATUS, SESSION_LOG_START);
  event_begin(&ev, start_step);
  pb_len(&ev, EVENT_SESSION_LOG, log.p, log.n);
  write_record(w, &ev);
  free(log.p);
  free(ev.p);
  if (!w->f) {
    dt_tfevents_close(w);
    return NULL;
  }
  return w;
}

void dt_tfevents_scalars(dt_tfevents *w, long step, int n, const char *const *tags,
                         const double *values) {
  if (!w || !w->f) return;
  pbuf summary = {0}, value = {0};
  for (int i = 0; i < n; i++) {
    value.n = 0;
    pb_len(&value, VALUE_TAG, tags[i], strlen(tags[i]));
    pb_float(&value, VALUE_SIMPLE, (float)values[i]);
    pb_len(&summary, SUMMARY_VALUE, value.p, value.n);
  }
  write_summary(w, step, &summary);
  free(summary.p);
  free(value.p);
}

void dt_tfevents_image(dt_tfevents *w, const char *tag, long step, const uint8_t *png,
                       size_t png_len, int width, int height, int channels) {
  if (!w || !w->f) return;
  pbuf image = {0}, value = {0}, summary = {0};
  pb_int(&image, IMAGE_HEIGHT, height);
  pb_int(&image, IMAGE_WIDTH, width);
  pb_int(&image, IMAGE_COLORSPACE, channels);
  pb_len(&image, IMAGE_ENCODED, png, png_len);
  pb_len(&value, VALUE_TAG, tag, strlen(tag));
  pb_len(&value, VALUE_IMAGE, image.p, image.n);
  pb_len(&summary, SUMMARY_VALUE, value.p, value.n);
  write_summary(w, step, &summary);
  free(image.p);
  free(value.p);
  free(summary.p);
}

const char *dt_tfevents_path(const dt_tfevents *w) { return w->path; }

void dt_tfevents_close(dt_tfevents *w) {
  if (!w) return;
  if (w->f && fclose(w->f) != 0)
    fprintf(stderr, "dtrain: warning: TensorBoard events file %s: closing failed: %s\n", w->path,
            strerror(errno));
  free(w->path);
  free(w);
}
