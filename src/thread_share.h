/* thread_share.h: a node-wide registry of the live dtrain processes and their CPU masks, so that
 * processes of different jobs that share cores also share them (README "Threads, ranks and
 * binding"): each process counts the live processes whose masks overlap its own, at start and
 * again while it trains, and takes its share of the cores.
 *
 * The registry is a directory (DTRAIN_SHARE_DIR, else /dev/shm/dtrain-<uid>, else
 * /tmp/dtrain-<uid>) with one file per process, "p<pid>-<start time>", holding its mask (a
 * dt_cpu_mask). The process holds an exclusive flock on its file for as long as it lives; a file
 * whose lock can be taken belongs to a process that ended without removing it (killed, crashed)
 * and is ignored and removed. Only processes of one user see each other (the directory is
 * theirs, mode 0700). */
#ifndef DT_THREAD_SHARE_H
#define DT_THREAD_SHARE_H

#include <stdbool.h>

#include "thread_plan.h"

typedef struct dt_share dt_share;

/* The registry directory for this process: DTRAIN_SHARE_DIR when set and not empty, else
 * /dev/shm/dtrain-<uid> when /dev/shm exists, else /tmp/dtrain-<uid>. */
void dt_share_default_dir(char *buf, size_t size);

/* True unless DTRAIN_SHARE is set to 0 (sharing across processes turned off). */
bool dt_share_enabled(void);

/* Registers this process with mask in dir (created, mode 0700, when missing). NULL when the
 * directory cannot be made or is not a directory of this user, or the entry cannot be written:
 * the process then counts only its own job's ranks, and *why (when why is not NULL) says what
 * failed. */
dt_share *dt_share_join(const char *dir, const dt_cpu_mask *mask, char *why, size_t why_size);

/* The live registered processes whose masks overlap this one's, itself included (>= 1).
 * Entries of ended processes are skipped and removed; the process's own entry is written
 * again when another process removed it. */
int dt_share_count(dt_share *s);

/* Removes the entry and frees s (NULL is ignored). */
void dt_share_leave(dt_share *s);

/* ---- the share while training ----
 * The compute threads for `sharing` processes on the cores of a plan (p->cores), by the plan's
 * rule (thread_plan.h): cores / sharing, at least 1, less the loader threads where at least 2
 * compute threads remain. */
int dt_share_threads(const dt_thread_plan *p, int sharing);

/* What a training process runs between steps: whether the thread count should change. */
typedef struct {
  dt_share *share;     /* NULL: no adaptation (overrides, DTRAIN_SHARE=0, no registry) */
  dt_thread_plan plan; /* the start-up plan: cores, loader threads, the job's own sharing */
  int threads;         /* compute threads now */
  int sharing;         /* processes on these cores now, this one included */
  double next;         /* dt_now() of the next count */
  double interval;     /* seconds between counts */
} dt_share_watch;

/* Sets w up for a plan (w->share NULL unless the plan's threads come from the share, sharing is
 * enabled, and the registry could be joined). The registry count at start goes into
 * plan->sharing through dt_thread_plan_local; this only watches afterwards. */
void dt_share_watch_init(dt_share_watch *w, dt_share *share, const dt_thread_plan *plan,
                         double interval);

/* At most every w->interval seconds (now: dt_now()): recounts the processes on these cores and
 * returns the new compute thread count when it differs from w->threads (then w->threads and
 * w->sharing are updated, and *before the old count), else 0. */
int dt_share_watch_poll(dt_share_watch *w, double now, int *before);

/* The log line of a change, without a newline: "threads: 2 -> 1 (another dtrain process
 * shares these cores)". */
void dt_share_describe_change(const dt_share_watch *w, int before, char *buf, size_t size);

#endif
