/* metrics.h: the HDF5 metrics file of a run (rank 0). Two extendible tables of float64
 * columns, one dataset per column so h5py / h5dump read them directly:
 *   /epoch/<column>  one row per epoch: epoch, step, lr, train_loss, train_top1, test_loss,
 *                    test_top1, test_top5, seconds, images_per_s, loss_scale (at the
 *                    epoch's end; 1 without loss scaling), skipped_steps (updates skipped
 *                    for overflow or non-finite gradients)
 *   /steps/<column>  one row every output.log_every steps: step, epoch, lr, loss, top1,
 *                    images_per_s, loss_scale
 * The file is opened, appended to and closed at every flush (each epoch), so other programs can
 * read it while the run continues.
 * With output.tensorboard, every row is also written at once, as it is logged, to a TensorBoard
 * events file (io/tfevents.h): one scalar per column but `step`, tagged <group>/<column>
 * (steps/loss, epoch/test_top1, ...), at the row's step, so TensorBoard's curves are the columns
 * of metrics.h5 under the same step numbers. */
#ifndef DT_METRICS_H
#define DT_METRICS_H

#include "common.h"
#include "data/loader.h"

typedef struct {
  double epoch, step, lr, train_loss, train_top1, test_loss, test_top1, test_top5, seconds,
      images_per_s, loss_scale, skipped_steps;
} dt_epoch_row;

typedef struct {
  double step, epoch, lr, loss, top1, images_per_s, loss_scale;
} dt_step_row;

typedef struct dt_metrics dt_metrics;

/* Create path (fresh run) or reopen it (resume: rows with step > resume_step are dropped, as
 * they belong to the interrupted part of the run). resume_step < 0 = fresh. Errors: DT_ERR_IO. */
dt_status dt_metrics_open(dt_metrics **out, const char *path, long resume_step);
/* Buffer a step row; written at the next flush. */
void dt_metrics_step(dt_metrics *m, const dt_step_row *row);
/* Append an epoch row and every buffered step row, then close the file until next time. */
dt_status dt_metrics_epoch(dt_metrics *m, const dt_epoch_row *row);
dt_status dt_metrics_flush(dt_metrics *m);
void dt_metrics_close(dt_metrics *m);

/* Also write the rows logged from now on to a new TensorBoard events file in dir (created if
 * missing). resume_step as for dt_metrics_open: a fresh run (< 0) first deletes the events
 * files dir holds from an earlier run; a resumed one starts its file with a SessionLog START at
 * resume_step + 1, so TensorBoard drops the points the interrupted run logged after its
 * checkpoint. An unwritable file is a warning on stderr, and TensorBoard output is off. */
void dt_metrics_tensorboard(dt_metrics *m, const char *dir, long resume_step);
/* Whether TensorBoard output is on (so that a caller encodes a picture only when it is used). */
bool dt_metrics_has_images(const dt_metrics *m);
/* With TensorBoard output on: a PNG-encoded RGB picture of width x height as the image summary
 * tag at step; otherwise nothing. */
void dt_metrics_image(dt_metrics *m, const char *tag, long step, const uint8_t *png, size_t len,
                      int width, int height);

#endif
