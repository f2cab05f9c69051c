/* dump_batch.h: the command `dtrain --dump-batch FILE.png`: the first training batch of epoch 0,
 * built exactly as training builds it, as a picture to look at, plus the PNG writer it uses. The
 * same picture, PNG-encoded in memory, is the image summary of output.tensorboard. */
#ifndef DT_DUMP_BATCH_H
#define DT_DUMP_BATCH_H

#include "common.h"
#include "data/loader.h"

struct dt_config;

/* Load the dataset of `cfg`, build global batch 0 of epoch 0 with every augmentation and
 * mixing of [augment] (one process, the whole global batch), and write
 *   path      a PNG grid, 8 tiles a row, at most 64 tiles (the first images of the batch),
 *             each de-normalised to 0..255 and enlarged to at least 56 pixels; under each
 *             tile a strip of K bars whose heights are the soft target of the image (Dual-Cutout
 *             tiles show view 1 | view 2 side by side)
 *   path.txt  (path with .png replaced) the settings, the mixing draws, and per tile the
 *             sample, its label and its soft target as class:weight
 * Both are written to temporary files and renamed, so a failure leaves neither behind.
 * Errors (dataset, unwritable path) return a status with one message. */
dt_status dt_dump_batch(const struct dt_config *cfg, const char *path);

/* The picture of dt_dump_batch (the grid of tiles with their target strips) of batch b of
 * ds's training split, as a PNG file in memory: *png (malloc'ed, *len bytes) of *w x *h RGB
 * pixels. false with errno set when encoding failed. */
bool dt_dump_batch_png(const dt_dataset *ds, const dt_batch *b, uint8_t **png, size_t *len, int *w,
                       int *h);

/* Write an 8-bit RGB PNG (rgb: (h, w, 3) row-major) to `path` directly (no temporary file);
 * DT_ERR_IO with a message naming the path on failure. */
dt_status dt_png_write(const char *path, const uint8_t *rgb, int w, int h);

#endif
