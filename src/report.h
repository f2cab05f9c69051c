/* report.h: what a run tells its user, rank 0 only: messages on stdout and in log.txt, errors on
 * stderr, the header, the progress line every output.log_every steps (one refreshing line on a
 * terminal) with its ETA, and the epoch line; the progress and epoch rows also go to
 * metrics.h5. Other ranks print nothing. */
#ifndef DT_REPORT_H
#define DT_REPORT_H

#include <stdio.h>

#include "io/metrics.h"
#include "trainer.h"

typedef struct {
  int rank;
  bool tty;            /* stdout is a terminal of a one-rank run: one refreshing line */
  FILE *log;           /* log.txt, or NULL (borrowed from the run directory) */
  dt_metrics *metrics; /* metrics.h5, or NULL (borrowed) */
} dt_report;

void dt_report_init(dt_report *r, int rank, int world);

/* Print on rank 0 to stdout and log.txt. */
void dt_report_say(const dt_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A runtime error, on rank 0: one message on stderr (after the progress line of a terminal)
 * and in log.txt. */
void dt_report_error(const dt_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* End the terminal's progress line before other output. */
void dt_report_newline(const dt_report *r);

/* What the run is: data, ranks and batch split, model, learning rate, precision, all-reduce,
 * steps, run directory, and start_note (where the state came from) unless empty. */
void dt_report_header(const dt_report *r, const dt_trainer *t, const char *run_dir,
                      const char *start_note);

/* The progress line after step `row->step` (step_in_epoch of steps_per_epoch in epoch
 * row->epoch of epochs) and its metrics row; steps_left: steps to the end of the run, for the
 * ETA. show_scale: the loss scale is active. */
void dt_report_progress(const dt_report *r, const dt_step_row *row, long epochs,
                        long step_in_epoch, long steps_per_epoch, long steps_left,
                        long batch_size, bool show_scale);

/* The epoch line and its metrics row (a warning when metrics.h5 cannot be written). */
void dt_report_epoch(const dt_report *r, const dt_epoch_row *row, long epochs);

/* "1h05m" or "4m07s". */
void dt_report_format_eta(double seconds, char *buf, size_t size);

#endif
