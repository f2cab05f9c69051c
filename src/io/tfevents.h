/* tfevents.h: TensorBoard event files written from C (rank 0, output.tensorboard). A file is a
 * sequence of records, each
 *   uint64 length | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data
 * (little-endian; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8), the data a serialized
 * `Event` protobuf:
 *   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
 *                Summary summary = 5; SessionLog session_log = 7; }
 *   Summary    { repeated Value value = 1; }
 *   Value      { string tag = 1; float simple_value = 2; Image image = 4; }
 *   Image      { int32 height = 1; int32 width = 2; int32 colorspace = 3;
 *                bytes encoded_image_string = 4; }
 *   SessionLog { enum status = 1 (START = 1); }
 * The first record carries file_version "brain.Event:2"; the second a SessionLog START at the
 * step the writer starts from. TensorBoard reads every events file of a directory in name order
 * and, at the second and later START of a run, drops the points it has at that step or later:
 * a resumed run writes a new file whose START hides the steps the interrupted run logged after
 * its checkpoint, as metrics.h5 drops those rows.
 * Protobuf fields are encoded by hand (varints, fixed32/fixed64, length-delimited); no
 * protobuf library. An I/O error prints one warning and turns the writer off: TensorBoard
 * output never stops a run. */
#ifndef DT_TFEVENTS_H
#define DT_TFEVENTS_H

#include "common.h"

typedef struct dt_tfevents dt_tfevents;

/* CRC-32C (Castagnoli polynomial, reflected 0x82F63B78) of n bytes, continuing from crc (0 to
 * start): dt_crc32c(0, "123456789", 9) = 0xE3069283. */
uint32_t dt_crc32c(uint32_t crc, const void *data, size_t n);
/* The masked CRC a record stores. */
uint32_t dt_crc32c_mask(uint32_t crc);

/* Create DIR (if missing) and DIR/events.out.tfevents.<unix time>.<host>.<pid> (the time raised
 * past the stamps of the events files already in DIR, so the new file sorts last), and write the
 * file_version record and a SessionLog START at start_step (0 for a fresh run, the first step
 * after the checkpoint for a resumed one). Returns NULL after one warning on stderr when the
 * file cannot be written. */
dt_tfevents *dt_tfevents_open(const char *dir, long start_step);
/* One event at `step` with n scalar values (tags[i], values[i]); stored as float32. */
void dt_tfevents_scalars(dt_tfevents *w, long step, int n, const char *const *tags,
                         const double *values);
/* One event at `step` with an image value: png is a PNG file of width x height pixels with
 * `channels` colour channels (3 = RGB). */
void dt_tfevents_image(dt_tfevents *w, const char *tag, long step, const uint8_t *png,
                       size_t png_len, int width, int height, int channels);
/* The events file's path (for messages and tests). */
const char *dt_tfevents_path(const dt_tfevents *w);
/* Flush and close; NULL is accepted. */
void dt_tfevents_close(dt_tfevents *w);

#endif
