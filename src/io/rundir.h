/* rundir.h: the run directory (docs/architecture.md "Run directory"), rank 0 only: creating it
 * and its parents, who owns it (an exclusive lock), config.ini, log.txt and metrics.h5 opened
 * for the run, clearing what a run started over must not mix with, removing what a fresh run
 * that failed before it started created, and what a resumed run may change in its
 * configuration. */
#ifndef DT_RUNDIR_H
#define DT_RUNDIR_H

#include <stdio.h>

#include "common.h"
#include "config.h"
#include "io/metrics.h"

#define DT_RUNDIR_LOCK ".lock"

/* Take the run directory `dir` (which must exist) for this process: an exclusive flock on
 * dir/.lock (created if missing, otherwise left as it is). The kernel releases it when the
 * process ends, however it ends. On success *fd is the lock's descriptor (close it to release
 * early). DT_ERR_IO with a message naming the holder's pid and host (as its note says) when
 * another process has it, or when the lock file cannot be made. */
dt_status dt_rundir_lock(const char *dir, int *fd);

/* Write this process's pid and host into the lock file of dt_rundir_lock, once the run
 * starts (a refused --resume leaves the directory as it was). */
void dt_rundir_lock_note(int fd);

/* A run directory as rank 0 holds it. */
typedef struct {
  const char *path;
  int lock_fd;         /* the lock (dt_rundir_lock), -1 when not held */
  char *created;       /* a fresh run not started yet: the topmost directory it created */
  FILE *log;           /* log.txt, NULL until dt_rundir_open */
  dt_metrics *metrics; /* metrics.h5, NULL until dt_rundir_open */
} dt_rundir;

/* Nothing held yet; path is borrowed. */
void dt_rundir_init(dt_rundir *rd, const char *path);

/* Take the directory's lock (dt_rundir_lock) unless held already. */
dt_status dt_rundir_take(dt_rundir *rd);

/* Make the directory ready for a run, the lock held from before anything in it changes. A
 * fresh run (resume false) creates it and its parents, refuses one that already holds a run
 * (config.ini) unless output.overwrite (which removes the old run's metrics and checkpoints),
 * and writes config.ini. A resumed run (resume_step >= 0, the lock taken already) rewrites
 * config.ini when rewrite_config (--resume with --set) and removes the temporary files of a
 * killed checkpoint save. Then log.txt (appended to, unless a fresh run overwrites) and
 * metrics.h5 (dt_metrics_open with resume_step) are opened. DT_ERR_IO naming the directory. */
dt_status dt_rundir_open(dt_rundir *rd, const dt_config *cfg, long resume_step,
                         bool rewrite_config);

/* The run started: what it writes stays (dt_rundir_abandon no longer removes anything). */
void dt_rundir_started(dt_rundir *rd);

/* A fresh run that fails before it starts leaves nothing behind: log and metrics are closed,
 * what it wrote in the directories it created and those directories removed (only while it
 * holds the lock: otherwise the files are another process's). */
void dt_rundir_abandon(dt_rundir *rd);

/* Close log, metrics and lock. */
void dt_rundir_close(dt_rundir *rd);

/* The keys whose value differs between `before` (a run's config.ini) and `after` (the same
 * with the --set overrides of a --resume), as "section.key = old -> new" lines in *changes
 * (malloc'ed, NULL when nothing changed). DT_ERR_CONFIG, naming the first one, when a key that
 * cannot change in the middle of a run differs: the model (its parameter table), the data
 * (dataset, limits), the global batch and seed (the sampler's position), the optimizer (its
 * state) or output.dir. */
dt_status dt_rundir_config_changes(const dt_config *before, const dt_config *after,
                                   const char *run_dir, char **changes);

#endif
