/* dump_batch.c: the command --dump-batch (run by main.c), a picture of the first training batch as the trainer receives it
 * (after crop, flip, normalisation, erasing and batch mixing), to check augmentations by eye,
 * and a small PNG encoder on zlib (deflate and crc32). */
#define _GNU_SOURCE /* realpath */
#include "dump_batch.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"
#include "data/loader.h"
#include "io/atomic.h"
#include "loader_options.h"

enum {
  DT_DUMP_COLUMNS = 8,
  DT_DUMP_MAX_TILES = 64,
  DT_DUMP_MIN_SIDE = 56, /* tiles are enlarged by an integer factor to at least this */
  DT_DUMP_GAP = 6,       /* pixels between cells */
  DT_DUMP_VIEW_GAP = 2,  /* between the two Dual-Cutout views */
  DT_DUMP_STRIP = 14,    /* height of the soft-target strip under a tile */
};

/* ---- PNG ---- */

static void dt_png_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* One chunk: length, type, data, CRC of type and data. */
static bool dt_png_chunk(FILE *f, const char type[4], const uint8_t *data, size_t len) {
  uint8_t head[8], tail[4];
  dt_png_be32(head, (uint32_t)len);
  memcpy(head + 4, type, 4);
  uLong crc = crc32(0L, (const Bytef *)type, 4);
  if (len) crc = crc32(crc, data, (uInt)len);
  dt_png_be32(tail, (uint32_t)crc);
  return fwrite(head, 1, 8, f) == 8 && (len == 0 || fwrite(data, 1, len, f) == len) &&
         fwrite(tail, 1, 4, f) == 4;
}

/* Encode to an open file; false with errno set (or EIO for zlib) on failure. */
static bool dt_png_encode(FILE *f, const uint8_t *rgb, int w, int h) {
  DT_CHECK(w > 0 && h > 0);
  /* Each row is filter byte 0 (None) followed by its RGB bytes, all deflated as one zlib
   * stream in one IDAT chunk. */
  const size_t row = (size_t)w * 3 + 1, raw_len = row * (size_t)h;
  uint8_t *raw = dt_xmalloc(raw_len);
  for (int y = 0; y < h; y++) {
    raw[row * y] = 0;
    memcpy(raw + row * y + 1, rgb + (size_t)y * w * 3, (size_t)w * 3);
  }
  uLongf z_len = compressBound((uLong)raw_len);
  uint8_t *z = dt_xmalloc(z_len);
  const int zrc = compress2(z, &z_len, raw, (uLong)raw_len, 9);
  free(raw);
  if (zrc != Z_OK) {
    free(z);
    errno = EIO;
    return false;
  }
  static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  uint8_t ihdr[13];
  dt_png_be32(ihdr, (uint32_t)w);
  dt_png_be32(ihdr + 4, (uint32_t)h);
  ihdr[8] = 8;  /* bit depth */
  ihdr[9] = 2;  /* colour type: RGB */
  ihdr[10] = 0; /* deflate */
  ihdr[11] = 0; /* adaptive filtering (each row names its filter) */
  ihdr[12] = 0; /* no interlace */
  const bool ok = fwrite(signature, 1, 8, f) == 8 && dt_png_chunk(f, "IHDR", ihdr, sizeof ihdr) &&
                  dt_png_chunk(f, "IDAT", z, z_len) && dt_png_chunk(f, "IEND", NULL, 0);
  free(z);
  return ok;
}

/* Close f; false with errno set when any write to it failed. */
static bool dt_dump_close(FILE *f, bool ok) {
  int e = errno;
  if (ok && ferror(f)) ok = false, e = EIO;
  if (fclose(f) != 0 && ok) ok = false, e = errno;
  errno = e;
  return ok;
}

dt_status dt_png_write(const char *path, const uint8_t *rgb, int w, int h) {
  FILE *f = fopen(path, "wb");
  if (!f) return dt_error_set(DT_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  if (!dt_dump_close(f, dt_png_encode(f, rgb, w, h)))
    return dt_error_set(DT_ERR_IO, "%s: writing failed: %s", path, strerror(errno));
  return DT_OK;
}

/* ---- the picture ---- */

typedef struct {
  int w, h;
  uint8_t *rgb; /* (h, w, 3) */
} dt_canvas;

static void dt_canvas_put(dt_canvas *cv, int x, int y, const uint8_t c[3]) {
  if (x < 0 || y < 0 || x >= cv->w || y >= cv->h) return;
  memcpy(cv->rgb + ((size_t)y * cv->w + x) * 3, c, 3);
}

static void dt_canvas_rect(dt_canvas *cv, int x0, int y0, int w, int h, const uint8_t c[3]) {
  for (int y = y0; y < y0 + h; y++)
    for (int x = x0; x < x0 + w; x++) dt_canvas_put(cv, x, y, c);
}

/* One normalised image (C, H, W), de-normalised to 0..255, enlarged by `scale`, at (x0, y0). */
static void dt_canvas_image(dt_canvas *cv, const dt_dataset *ds, const dt_split *sp,
                            const float *img, int scale, int x0, int y0) {
  const int C = sp->channels, H = sp->height, W = sp->width;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      uint8_t px[3];
      for (int k = 0; k < 3; k++) {
        const int c = C == 3 ? k : 0;
        const float v = img[((size_t)c * H + y) * W + x] * ds->std[c] + ds->mean[c];
        px[k] = (uint8_t)DT_MAX(0L, DT_MIN(255L, lrintf(v * 255.0f)));
      }
      dt_canvas_rect(cv, x0 + x * scale, y0 + y * scale, scale, scale, px);
    }
}

/* The soft target row (K) as K bars on a light strip; the bar of the image's own label is
 * orange, the others blue. */
static void dt_canvas_target(dt_canvas *cv, const float *row, int K, int label, int x0, int y0,
                             int w) {
  static const uint8_t strip[3] = {225, 225, 225}, own[3] = {230, 120, 0}, other[3] = {30, 90, 200};
  dt_canvas_rect(cv, x0, y0, w, DT_DUMP_STRIP, strip);
  const int bar = DT_MAX(1, w / K), full = DT_DUMP_STRIP - 2;
  for (int c = 0; c < K; c++) {
    if (row[c] <= 0) continue;
    const int height = DT_MAX(1, (int)lrintf(row[c] * (float)full)); /* small weights show too */
    dt_canvas_rect(cv, x0 + c * bar, y0 + 1 + full - height, DT_MAX(1, bar - 1), height,
                   c == label ? own : other);
  }
}

/* The picture of batch b (dump.h): allocates cv->rgb, the caller frees it. */
static void dt_dump_picture(const dt_dataset *ds, const dt_batch *b, dt_canvas *cv) {
  const dt_split *sp = &ds->train;
  const int H = sp->height, W = sp->width, K = ds->classes;
  const size_t F = (size_t)sp->channels * H * W;
  const int scale = DT_MAX(1, (DT_DUMP_MIN_SIDE + H - 1) / H);
  const int views = b->images2 ? 2 : 1;
  const int tile_w = views * W * scale + (views - 1) * DT_DUMP_VIEW_GAP, tile_h = H * scale;
  const int cell_w = DT_MAX(tile_w, K), cell_h = tile_h + 2 + DT_DUMP_STRIP;
  const int tiles = DT_MIN(b->n, DT_DUMP_MAX_TILES);
  const int cols = DT_MIN(tiles, DT_DUMP_COLUMNS), rows = (tiles + DT_DUMP_COLUMNS - 1) / DT_DUMP_COLUMNS;
  cv->w = cols * (cell_w + DT_DUMP_GAP) + DT_DUMP_GAP;
  cv->h = rows * (cell_h + DT_DUMP_GAP) + DT_DUMP_GAP;
  cv->rgb = dt_xmalloc((size_t)cv->w * cv->h * 3);
  memset(cv->rgb, 255, (size_t)cv->w * cv->h * 3);
  for (int i = 0; i < tiles; i++) {
    const int r = i / DT_DUMP_COLUMNS, c = i % DT_DUMP_COLUMNS;
    const int x0 = DT_DUMP_GAP + c * (cell_w + DT_DUMP_GAP), y0 = DT_DUMP_GAP + r * (cell_h + DT_DUMP_GAP);
    dt_canvas_image(cv, ds, sp, b->images + (size_t)i * F, scale, x0, y0);
    if (b->images2)
      dt_canvas_image(cv, ds, sp, b->images2 + (size_t)i * F, scale, x0 + W * scale + DT_DUMP_VIEW_GAP,
                      y0);
    dt_canvas_target(cv, b->targets + (size_t)i * K, K, b->labels[i], x0, y0 + tile_h + 2, cell_w);
  }
}

bool dt_dump_batch_png(const dt_dataset *ds, const dt_batch *b, uint8_t **png, size_t *len, int *w,
                       int *h) {
  *png = NULL, *len = 0;
  dt_canvas cv;
  dt_dump_picture(ds, b, &cv);
  *w = cv.w, *h = cv.h;
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  if (!f) {
    free(cv.rgb);
    return false;
  }
  const bool ok = dt_dump_close(f, dt_png_encode(f, cv.rgb, cv.w, cv.h));
  free(cv.rgb);
  if (!ok) {
    free(buf);
    *len = 0;
    return false;
  }
  *png = (uint8_t *)buf;
  return true;
}

/* ---- the sidecar text ---- */

static void dt_dump_settings(FILE *f, const dt_config *cfg, const dt_loader_cfg *lc,
                             const dt_erase_cfg *e, const dt_mix_cfg *m, int H, int W) {
  fprintf(f, "crop: %s (padding %d); hflip: %s (p %g)\n", lc->aug.random_crop ? "on" : "off",
          lc->aug.crop_padding, lc->aug.hflip ? "on" : "off", (double)lc->aug.hflip_prob);
  if (e->cutout || e->dual_cutout)
    fprintf(f, "%s: prob %g, size %d, inside %s\n", e->dual_cutout ? "dual_cutout" : "cutout",
            e->cutout_prob, e->cutout_size, e->cutout_inside ? "true" : "false");
  if (e->dual_cutout)
    fprintf(f, "dual_cutout: alpha %g; each tile is view 1 | view 2\n", cfg->augment_dual_cutout_alpha);
  if (e->random_erasing)
    fprintf(f, "random_erasing: prob %g, area [%g, %g], min aspect %g, %d attempts\n",
            e->erasing_prob, e->erasing_area_min, e->erasing_area_max, e->erasing_min_aspect,
            e->erasing_max_attempts);
  if (m->label_smoothing > 0) fprintf(f, "label_smoothing: epsilon %g\n", m->label_smoothing);
  if (m->kind == DT_MIX_NONE) return;
  /* The same draws the loader made for this batch. */
  dt_mix_params p;
  dt_mix_params_init(&p, lc->global_batch);
  dt_mix_draw(m, lc->seed, 0, 0, H, W, &p);
  switch (m->kind) {
    case DT_MIX_NONE: break;
    case DT_MIX_MIXUP: fprintf(f, "mixup: alpha %g, lambda %.6f\n", m->alpha, p.lambda); break;
    case DT_MIX_CUTMIX:
      fprintf(f, "cutmix: alpha %g, lambda %.6f, centre (%.3f, %.3f), box x [%d, %d) y [%d, %d)\n",
              m->alpha, p.lambda, p.cx, p.cy, p.box_x0, p.box_x1, p.box_y0, p.box_y1);
      break;
    case DT_MIX_RICAP:
      fprintf(f, "ricap: beta %g, r_w %.6f, r_h %.6f\n", m->alpha, p.ratio_w, p.ratio_h);
      for (int k = 0; k < 4; k++)
        fprintf(f, "  patch %d: %dx%d at (%d, %d) from (%d, %d), weight %.6f\n", k, p.w[k], p.h[k],
                p.px[k], p.py[k], p.x0[k], p.y0[k], p.weight[k]);
      break;
  }
  dt_mix_params_free(&p);
}

/* path with a trailing .png replaced by `ext` (or `ext` appended). */
static char *dt_dump_sibling(const char *path, const char *ext) {
  size_t n = strlen(path);
  if (n >= 4 && strcasecmp(path + n - 4, ".png") == 0) n -= 4;
  char *s = dt_xmalloc(n + strlen(ext) + 1);
  memcpy(s, path, n);
  strcpy(s + n, ext);
  return s;
}

/* The kind of a file that is not a regular one, for messages. */
static const char *dt_dump_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

/* Where the file named `given` is written (malloc'ed in *target): `given` itself when it does
 * not exist or is a regular file, the file it names when it is a symbolic link (written
 * through, the link kept). Anything else (a device such as /dev/null, a FIFO, a directory) is
 * refused: the file is written to a temporary file renamed over the name, which would replace
 * it. */
static dt_status dt_dump_target(const char *given, char **target) {
  *target = NULL;
  struct stat sb;
  if (lstat(given, &sb) != 0) {
    if (errno != ENOENT)
      return dt_error_set(DT_ERR_IO, "--dump-batch: cannot write %s: %s", given, strerror(errno));
    *target = dt_xstrdup(given);
    return DT_OK;
  }
  char *real = NULL;
  if (S_ISLNK(sb.st_mode)) {
    real = realpath(given, NULL);
    if (!real || stat(real, &sb) != 0) {
      const int e = errno;
      free(real);
      return dt_error_set(DT_ERR_IO,
                          "--dump-batch: %s is a symbolic link to a file that cannot be written "
                          "through (%s); give a regular file name",
                          given, strerror(e));
    }
  }
  if (!S_ISREG(sb.st_mode)) {
    free(real);
    return dt_error_set(DT_ERR_IO,
                        "--dump-batch: %s is %s, not a regular file: dtrain writes the picture "
                        "to a new file renamed into place and will not replace it; give a file "
                        "name",
                        given, dt_dump_kind(sb.st_mode));
  }
  *target = real ? real : dt_xstrdup(given);
  return DT_OK;
}

dt_status dt_dump_batch(const dt_config *cfg, const char *given) {
  /* Both names are checked before any work, so a refused one costs nothing. */
  char *given_txt = dt_dump_sibling(given, ".txt"), *path = NULL, *txt = NULL;
  dt_status st = dt_dump_target(given, &path);
  if (st == DT_OK) st = dt_dump_target(given_txt, &txt);
  free(given_txt);
  if (st != DT_OK) {
    free(path);
    return st;
  }
  dt_dataset ds;
  st = dt_dataset_load_config(&ds, cfg);
  if (st != DT_OK) {
    free(path);
    free(txt);
    return st;
  }
  dt_dataset_limit(&ds, (int)cfg->data_train_limit, (int)cfg->data_test_limit);
  const int B = (int)cfg->train_batch_size;
  if (ds.train.count < B) {
    dt_dataset_free(&ds);
    free(path);
    free(txt);
    return dt_error_set(DT_ERR_CONFIG, "train.batch_size = %d is larger than the %d training images",
                        B, ds.train.count);
  }
  dt_loader_cfg lc;
  dt_erase_cfg erase;
  dt_mix_cfg mix;
  dt_loader_cfg_from_config(&lc, &erase, &mix, cfg, &ds);
  lc.threads = 1;
  dt_loader *ld = dt_loader_create_train(&lc, &erase, &mix);
  dt_loader_start(ld, 0, 0);
  const dt_batch *b = dt_loader_next(ld);
  DT_CHECK(b != NULL); /* count >= B: at least one batch */

  const int H = ds.train.height, W = ds.train.width, K = ds.classes;
  const int tiles = DT_MIN(b->n, DT_DUMP_MAX_TILES);
  dt_canvas cv;
  dt_dump_picture(&ds, b, &cv);

  char *tmp_png = dt_xmalloc(strlen(path) + 32), *tmp_txt = dt_xmalloc(strlen(txt) + 32);
  sprintf(tmp_png, "%s.%ld.tmp", path, (long)getpid());
  sprintf(tmp_txt, "%s.%ld.tmp", txt, (long)getpid());
  /* Both files are opened before anything is written, the picture first, so that an
   * unwritable place is reported under the name the user gave. */
  FILE *png = fopen(tmp_png, "wb"), *f = NULL;
  if (!png) {
    st = dt_error_set(DT_ERR_IO, "--dump-batch: cannot write %s: %s", path, strerror(errno));
    goto done;
  }
  f = fopen(tmp_txt, "w");
  if (!f) {
    st = dt_error_set(DT_ERR_IO, "--dump-batch: cannot write %s: %s", txt, strerror(errno));
    fclose(png);
    goto done;
  }
  fprintf(f, "dtrain --dump-batch: %s, seed %ld, epoch 0, global batch 0 of %d images; the first %d "
          "shown, %d per row\n",
          dt_data_dataset_str(cfg->data_dataset), cfg->train_seed, b->global_n, tiles,
          DT_DUMP_COLUMNS);
  dt_dump_settings(f, cfg, &lc, &erase, &mix, H, W);
  fprintf(f, "tile row col label target (class:weight, largest first)\n");
  for (int i = 0; i < tiles; i++) {
    const float *row = b->targets + (size_t)i * K;
    fprintf(f, "%d %d %d %d", i, i / DT_DUMP_COLUMNS, i % DT_DUMP_COLUMNS, b->labels[i]);
    /* the non-zero weights, largest first; each pass prints the largest one not yet printed */
    float last = INFINITY;
    int last_class = -1;
    for (;;) {
      int best = -1;
      for (int k = 0; k < K; k++) {
        const bool after = row[k] < last || (row[k] == last && k > last_class);
        if (row[k] > 0 && after && (best < 0 || row[k] > row[best])) best = k;
      }
      if (best < 0) break;
      fprintf(f, " %d:%.6f", best, (double)row[best]);
      last = row[best], last_class = best;
    }
    fputc('\n', f);
  }
  if (!dt_dump_close(f, true)) {
    st = dt_error_set(DT_ERR_IO, "--dump-batch: writing %s failed: %s", txt, strerror(errno));
    fclose(png);
    goto done;
  }
  if (!dt_dump_close(png, dt_png_encode(png, cv.rgb, cv.w, cv.h))) {
    st = dt_error_set(DT_ERR_IO, "--dump-batch: writing %s failed: %s", path, strerror(errno));
    goto done;
  }
  st = dt_atomic_replace(tmp_txt, txt, "--dump-batch");
  if (st != DT_OK) goto done;
  st = dt_atomic_replace(tmp_png, path, "--dump-batch");
  if (st != DT_OK) {
    unlink(txt);
    goto done;
  }
  printf("wrote %s (%d of %d images, %dx%d pixels) and %s\n", path, tiles, b->global_n, cv.w, cv.h,
         txt);
done:
  if (st != DT_OK) {
    unlink(tmp_txt);
    unlink(tmp_png);
  }
  free(tmp_png);
  free(tmp_txt);
  free(txt);
  free(path);
  free(cv.rgb);
  dt_loader_free(ld);
  dt_dataset_free(&ds);
  return st;
}
