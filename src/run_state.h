/* run_state.h: checkpoint policy, what a run saves and what it resumes from. A checkpoint holds
 * the state after a step (weights, running statistics, optimizer state and steps, loss scale,
 * the backend's algorithm choices, the position and the epoch's metrics so far); --resume
 * restores all of it, after checking it against the configuration it resumes with; --init
 * takes the weights only. When to save is the loop's (train.c). */
#ifndef DT_RUN_STATE_H
#define DT_RUN_STATE_H

#include "io/metrics.h"
#include "trainer.h"

/* What an epoch's metrics rows are made of, so far: sums of loss, correct and images over
 * its applied steps, the same over the current output.log_every window, skipped updates.
 * Checkpoints carry it, so that a resumed epoch reports what an uninterrupted one would. */
typedef struct {
  double sums[3], win[3]; /* loss, correct, images */
  long skipped;
} dt_epoch_metrics;

/* Where a run starts: step 0, or the position of the checkpoint it resumes. */
typedef struct {
  long step, epoch, step_in_epoch;
  dt_epoch_metrics metrics; /* the resumed epoch's metrics so far (zero for a fresh run) */
  char note[4400];          /* where the state came from (--resume, --init), or "" */
} dt_run_start;

/* Rank 0 writes the checkpoint of the state after `step` steps into run_dir/checkpoints, with
 * the metrics of the epoch in progress (NULL: none, at an epoch boundary), then prunes to
 * output.keep_last. The step rows logged so far reach metrics (if not NULL) first: a run
 * killed later resumes from here and redoes only what follows. Other ranks return DT_OK. */
dt_status dt_run_state_save(dt_trainer *t, const char *run_dir, dt_metrics *metrics, long epoch,
                            long step, long step_in_epoch, const dt_epoch_metrics *em);

/* Restore the state of the latest checkpoint of resume_dir, or the weights of the checkpoint
 * init_path (--init), or nothing when both are NULL; *start says where the run starts. Input
 * errors (DT_ERR_DATA with the file named) leave the trainer as it was. */
dt_status dt_run_state_load(dt_trainer *t, const char *resume_dir, const char *init_path,
                            dt_run_start *start);

#endif
