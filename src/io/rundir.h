/* rundir.h: who owns a run directory (an exclusive lock), and what a resumed run may change in its
 * configuration (docs/architecture.md "Run directory"). Rank 0 only. */
#ifndef DT_RUNDIR_H
#define DT_RUNDIR_H

#include "common.h"
#include "config.h"

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

/* The keys whose value differs between `before` (a run's config.ini) and `after` (the same
 * with the --set overrides of a --resume), as "section.key = old -> new" lines in *changes
 * (malloc'ed, NULL when nothing changed). DT_ERR_CONFIG, naming the first one, when a key that
 * cannot change in the middle of a run differs: the model (its parameter table), the data
 * (dataset, limits), the global batch and seed (the sampler's position), the optimizer (its
 * state) or output.dir. */
dt_status dt_rundir_config_changes(const dt_config *before, const dt_config *after,
                                   const char *run_dir, char **changes);

#endif
