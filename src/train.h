/* train.h: the training commands: a run (train.c: the loop over epochs and steps, with
 * checkpoints, resume and preemption signals), --bench and --dry-run (bench.c). The parts are
 * trainer.h (what every rank sets up), step.h (one step), evaluate.h, report.h, run_state.h
 * (checkpoint policy), ranks.h (rank agreement) and io/rundir.h (the run directory). */
#ifndef DT_TRAIN_H
#define DT_TRAIN_H

#include "backend.h"
#include "comm/comm.h"
#include "config.h"

/* Exit statuses of a run. */
enum {
  DT_EXIT_OK = 0,
  DT_EXIT_INPUT = 1,     /* bad input; the message has been printed */
  DT_EXIT_RUNTIME = 2,   /* the run failed (non-finite loss, I/O failure while running) */
  /* 3: DT_EXIT_FATAL (common.h), a fatal runtime error; every rank aborted */
  DT_EXIT_PREEMPTED = 143, /* SIGTERM/SIGUSR1: checkpoint written, safe to --resume */
};

typedef struct {
  dt_device device;
  const char *resume_dir; /* continue the run in this directory from its latest checkpoint */
  const char *init_path;  /* start from the weights of this checkpoint */
  const char *config_changes; /* --resume with --set: the changes (dt_rundir_config_changes),
                               * recorded in config.ini and log.txt; NULL: none */
} dt_run_opts;

/* SIGTERM and SIGUSR1 (Slurm's --signal) end a run at the next step boundary with a
 * checkpoint and DT_EXIT_PREEMPTED. Installed first thing, so a signal during start-up is not
 * lost. */
void dt_train_catch_signals(void);
/* The default action again (the process ends at once): for the modes that write no checkpoint
 * (--bench, --dry-run, --eval, --predict), which would otherwise ignore SIGTERM until done. A
 * signal caught before is acted on now. */
void dt_train_release_signals(void);
int dt_train_run(const dt_config *cfg, dt_comm *comm, const dt_run_opts *opts);
int dt_train_bench(const dt_config *cfg, dt_comm *comm, dt_device device, long steps);
int dt_train_dry_run(const dt_config *cfg);

#endif
