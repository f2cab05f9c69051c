/* metrics.h: the HDF5 metrics file of a run (rank 0). Two extendible tables of float64
 * columns, one dataset per column so h5py / h5dump read them directly:
 *   /epoch/<column>  one row per epoch: epoch, step, lr, train_loss, train_top1, test_loss,
 *                    test_top1, test_top5, seconds, images_per_s, loss_scale (at the
 *                    epoch's end; 1 without loss scaling), skipped_steps (updates skipped
 *                    for overflow or non-finite gradients)
 *   /steps/<column>  one row every output.log_every steps: step, epoch, lr, loss, top1,
 *                    images_per_s, loss_scale
 * The file is opened, appended to and closed at every flush (each epoch), so other programs can
 * read it while the run continues. */
#ifndef DT_METRICS_H
#define DT_METRICS_H

#include "common.h"

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

#endif
