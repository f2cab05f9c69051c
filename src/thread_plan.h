/* thread_plan.h: how many compute threads a CPU rank starts, so that ranks (and their loader
 * threads) that share a node share its cores instead of each starting one thread per core, and
 * which OpenMP wait policy the process runs with (README "Threads, ranks and binding").
 *
 * The decision is a pure function of the affinity masks of the node's ranks and the overrides
 * (dt_thread_plan_make, unit-tested); dt_thread_plan_local gathers the masks over the comm. */
#ifndef DT_THREAD_PLAN_H
#define DT_THREAD_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "comm/comm.h"
#include "config.h"

/* A set of CPUs (Linux CPU numbers 0..1023, the size of glibc's cpu_set_t). */
#define DT_CPU_MASK_WORDS 16
typedef struct {
  uint64_t bits[DT_CPU_MASK_WORDS];
} dt_cpu_mask;

void dt_cpu_mask_clear(dt_cpu_mask *m);
void dt_cpu_mask_add(dt_cpu_mask *m, int cpu);
/* CPUs first..last, inclusive. */
void dt_cpu_mask_add_range(dt_cpu_mask *m, int first, int last);
int dt_cpu_mask_count(const dt_cpu_mask *m);
bool dt_cpu_mask_overlaps(const dt_cpu_mask *a, const dt_cpu_mask *b);
/* This process's affinity mask (sched_getaffinity); every online CPU when it cannot be read. */
void dt_cpu_mask_self(dt_cpu_mask *m);

/* What one local rank contributes to the decision: its mask and its OMP_NUM_THREADS. */
typedef struct {
  dt_cpu_mask mask;
  int omp_threads;      /* dt_thread_plan_parse_omp(getenv("OMP_NUM_THREADS")) */
  int registry_sharing; /* live dtrain processes of any job on its cores, itself included
                           (dt_share_count, thread_share.h); 0 = not known */
} dt_thread_rank;

typedef enum {
  DT_THREADS_SHARE,      /* the rank's share of the cores in its mask */
  DT_THREADS_CONFIG,     /* train.threads */
  DT_THREADS_ENVIRONMENT /* OMP_NUM_THREADS */
} dt_thread_source;

typedef struct {
  int threads;             /* compute (OpenMP) threads of this rank, >= 1 */
  dt_thread_source source; /* where threads came from */
  int cores;               /* CPUs in this rank's mask */
  int job_sharing;         /* local ranks whose masks overlap this rank's, itself included */
  int sharing;             /* job_sharing, or the registry's count of processes of any job on
                              these cores when that is larger */
  int share;               /* cores / sharing, at least 1: this rank's budget */
  int loader_threads;      /* data.loader_threads, which count against the budget */
  int local_ranks;         /* ranks on this node */
  int node_cores;          /* CPUs in the union of the local ranks' masks */
  int node_threads;        /* compute threads of every local rank together */
  int min_threads, max_threads; /* over the local ranks */
  bool oversubscribed;     /* node_threads > node_cores, or threads > cores */
} dt_thread_plan;

/* The first number of an OMP_NUM_THREADS value ("8" or "8,2"), or 0 when s is NULL or does not
 * start with a positive number (OpenMP then ignores it too). */
int dt_thread_plan_parse_omp(const char *s);

/* The decision for local rank self of ranks[0..local_ranks). threads_cfg is train.threads
 * (0 = not set), loader_threads is data.loader_threads. Pure: the same inputs give the same
 * plan. Order: train.threads, else the rank's OMP_NUM_THREADS, else the rank's share: the
 * cores in its mask divided by the number of local ranks whose masks overlap it (itself
 * included), or by its registry_sharing when that is larger (other jobs), at least 1, less its loader threads when at least 2 compute threads remain. Every
 * local rank is decided the same way to fill node_threads and oversubscribed. */
void dt_thread_plan_make(dt_thread_plan *p, const dt_thread_rank *ranks, int local_ranks, int self,
                         int threads_cfg, int loader_threads);

/* The plan of this rank on its node: its own mask and OMP_NUM_THREADS, and the count of
 * registered processes on its cores when share is not NULL (thread_share.h), the other local
 * ranks' gathered over comm (collective: every rank calls it), train.threads and
 * data.loader_threads from cfg. */
struct dt_share;
void dt_thread_plan_local(dt_thread_plan *p, dt_comm *comm, const dt_config *cfg,
                          struct dt_share *share);

/* The start-up line, without a newline: "ranks: 8 x 8 threads (64 cores, 8 local ranks)",
 * followed by where the count came from when it was not the share. world is the number of
 * ranks of the job. */
void dt_thread_plan_describe(const dt_thread_plan *p, int world, char *buf, size_t size);
/* The warning printed once (by local rank 0) when p->oversubscribed, without a newline. */
void dt_thread_plan_warning(const dt_thread_plan *p, char *buf, size_t size);

/* One rank's decision in words, for --dry-run: "threads: rank 1 of 4: 1 compute thread + 1
 * loader thread; its mask has 2 cores, shared by 4 local ranks (share)". */
void dt_thread_plan_describe_rank(const dt_thread_plan *p, int rank, int world, char *buf,
                                  size_t size);

/* What the trainer calls at set-up (collective over the node): the threads to create the
 * backend with, and the start-up line in line; the plan in *plan when plan is not NULL. On the
 * CPU: the process joins the registry of dtrain processes (thread_share.h; unless DTRAIN_SHARE
 * is 0), waits for the job's other ranks to join, then takes the plan of dt_thread_plan_local;
 * its line followed by the OpenMP wait policy, and the warning on stderr from local rank 0 when
 * the node is oversubscribed. The registry entry goes to *share (the caller leaves it with
 * dt_share_leave) when share is not NULL, else it is left at once; NULL when not joined. Other
 * devices: train.threads, and "ranks: N (L on this node)". */
int dt_thread_plan_start(dt_comm *comm, const dt_config *cfg, dt_device device,
                         dt_thread_plan *plan, struct dt_share **share, char *line, size_t size);

/* ---- OpenMP wait policy ----
 * A thread of an OpenMP team that finishes its part of a parallel region spins, waiting for the
 * others, before it sleeps (libgomp: 300000 spins by default). That is the fastest when the
 * process owns its cores, and a collapse when another process needs them: a spinning thread
 * takes the time slice a working thread (of this process or another) needed. */
typedef enum {
  DT_WAIT_RUNTIME, /* leave the OpenMP runtime's default (spin, then sleep) */
  DT_WAIT_PASSIVE  /* OMP_WAIT_POLICY=passive: sleep at once */
} dt_wait_policy;

/* The policy for a process, from what is known before MPI starts: the CPUs in its mask, the
 * CPUs online, the ranks the launcher started on this node (1 if none) and OMP_NUM_THREADS
 * (0 = unset). PASSIVE when the node's ranks have overlapping masks (local ranks x mask cores >
 * online CPUs) or OMP_NUM_THREADS exceeds the mask's cores: this job oversubscribes the cores
 * itself. Otherwise RUNTIME, also beside other jobs: measured on 2 cores at light load
 * (bench/threads.sh), passive lost to the runtime's default alone, beside a second run and
 * beside a busy loop. */
dt_wait_policy dt_wait_policy_choose(int mask_cores, int online_cpus, int launcher_local_ranks,
                                     int omp_threads);

/* Applies the policy at the start of main, before MPI and before any parallel region: the
 * OpenMP runtime reads OMP_WAIT_POLICY only when it is loaded, so the process sets it and
 * re-executes itself (once; DTRAIN_WAIT_POLICY marks the second start and records the choice).
 * Nothing happens when OMP_WAIT_POLICY or GOMP_SPINCOUNT is already set (the user's choice
 * wins), or when the runtime default is chosen. */
void dt_wait_policy_apply(char **argv);
/* The policy in effect, for the start-up line: "passive (chosen: ...)", "OMP_WAIT_POLICY=..."
 * or "spin, then sleep (the OpenMP default)". */
const char *dt_wait_policy_describe(void);

#endif
