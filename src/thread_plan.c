/* thread_plan.c: compute threads per CPU rank from the affinity masks of the node's ranks, and
 * the OpenMP wait policy (thread_plan.h). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_ISSET */
#include "thread_plan.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "thread_share.h"

void dt_cpu_mask_clear(dt_cpu_mask *m) { memset(m, 0, sizeof *m); }

void dt_cpu_mask_add(dt_cpu_mask *m, int cpu) {
  if (cpu >= 0 && cpu < 64 * DT_CPU_MASK_WORDS) m->bits[cpu / 64] |= (uint64_t)1 << (cpu % 64);
}

void dt_cpu_mask_add_range(dt_cpu_mask *m, int first, int last) {
  for (int c = first; c <= last; c++) dt_cpu_mask_add(m, c);
}

int dt_cpu_mask_count(const dt_cpu_mask *m) {
  int n = 0;
  for (int w = 0; w < DT_CPU_MASK_WORDS; w++) n += __builtin_popcountll(m->bits[w]);
  return n;
}

bool dt_cpu_mask_overlaps(const dt_cpu_mask *a, const dt_cpu_mask *b) {
  for (int w = 0; w < DT_CPU_MASK_WORDS; w++)
    if (a->bits[w] & b->bits[w]) return true;
  return false;
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 64 * DT_CPU_MASK_WORDS ? 64 * DT_CPU_MASK_WORDS : (int)n;
}

void dt_cpu_mask_self(dt_cpu_mask *m) {
  dt_cpu_mask_clear(m);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int c = 0; c < 64 * DT_CPU_MASK_WORDS && c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &set)) dt_cpu_mask_add(m, c);
  }
  if (dt_cpu_mask_count(m) == 0) dt_cpu_mask_add_range(m, 0, online_cpus() - 1);
}

int dt_thread_plan_parse_omp(const char *s) {
  if (!s) return 0;
  while (*s == ' ' || *s == '\t') s++;
  if (*s < '0' || *s > '9') return 0;
  char *end;
  long n = strtol(s, &end, 10);
  while (*end == ' ' || *end == '\t') end++;
  if (*end != 0 && *end != ',') return 0;
  return n < 1 ? 0 : n > 4096 ? 4096 : (int)n;
}

/* Threads and their source for local rank r. */
static int rank_threads(const dt_thread_rank *ranks, int n, int r, int threads_cfg,
                        int loader_threads, dt_thread_source *source, int *job_sharing,
                        int *sharing, int *share) {
  int cores = dt_cpu_mask_count(&ranks[r].mask);
  int s = 0;
  for (int j = 0; j < n; j++)
    if (j == r || dt_cpu_mask_overlaps(&ranks[r].mask, &ranks[j].mask)) s++;
  *job_sharing = s;
  s = DT_MAX(s, ranks[r].registry_sharing);
  int budget = DT_MAX(cores / s, 1);
  *sharing = s;
  *share = budget;
  if (threads_cfg > 0) {
    *source = DT_THREADS_CONFIG;
    return threads_cfg;
  }
  if (ranks[r].omp_threads > 0) {
    *source = DT_THREADS_ENVIRONMENT;
    return ranks[r].omp_threads;
  }
  *source = DT_THREADS_SHARE;
  /* The loader's threads run beside the compute threads. They give back their cores where at
   * least two compute threads remain; below that a mostly sleeping loader thread would cost a
   * whole compute thread (bench/threads.sh measures both). */
  return budget - loader_threads >= 2 ? budget - loader_threads : budget;
}

void dt_thread_plan_make(dt_thread_plan *p, const dt_thread_rank *ranks, int local_ranks, int self,
                         int threads_cfg, int loader_threads) {
  memset(p, 0, sizeof *p);
  DT_CHECK(local_ranks >= 1 && self >= 0 && self < local_ranks);
  p->local_ranks = local_ranks;
  p->loader_threads = loader_threads;
  p->cores = dt_cpu_mask_count(&ranks[self].mask);
  p->threads = rank_threads(ranks, local_ranks, self, threads_cfg, loader_threads, &p->source,
                            &p->job_sharing, &p->sharing, &p->share);
  dt_cpu_mask all;
  dt_cpu_mask_clear(&all);
  p->min_threads = p->max_threads = p->threads;
  for (int r = 0; r < local_ranks; r++) {
    dt_thread_source src;
    int job_sharing, sharing, share;
    int t = rank_threads(ranks, local_ranks, r, threads_cfg, loader_threads, &src, &job_sharing,
                         &sharing, &share);
    p->node_threads += t;
    p->min_threads = DT_MIN(p->min_threads, t);
    p->max_threads = DT_MAX(p->max_threads, t);
    for (int w = 0; w < DT_CPU_MASK_WORDS; w++) all.bits[w] |= ranks[r].mask.bits[w];
    if (t > dt_cpu_mask_count(&ranks[r].mask)) p->oversubscribed = true;
  }
  p->node_cores = dt_cpu_mask_count(&all);
  if (p->node_threads > p->node_cores) p->oversubscribed = true;
}

void dt_thread_plan_local(dt_thread_plan *p, dt_comm *comm, const dt_config *cfg,
                          dt_share *share) {
  int n = dt_comm_local_size(comm);
  dt_thread_rank mine;
  memset(&mine, 0, sizeof mine);
  dt_cpu_mask_self(&mine.mask);
  mine.omp_threads = dt_thread_plan_parse_omp(getenv("OMP_NUM_THREADS"));
  mine.registry_sharing = share ? dt_share_count(share) : 0;
  dt_thread_rank *all = dt_xcalloc((size_t)n, sizeof *all);
  dt_comm_local_allgather(comm, &mine, all, sizeof mine);
  dt_thread_plan_make(p, all, n, dt_comm_local_rank(comm), (int)cfg->train_threads,
                      (int)cfg->data_loader_threads);
  free(all);
}

static const char *source_name(dt_thread_source s) {
  switch (s) {
  case DT_THREADS_CONFIG:
    return "train.threads";
  case DT_THREADS_ENVIRONMENT:
    return "OMP_NUM_THREADS";
  case DT_THREADS_SHARE:
    break;
  }
  return "share";
}

void dt_thread_plan_describe(const dt_thread_plan *p, int world, char *buf, size_t size) {
  char threads[32];
  if (p->min_threads == p->max_threads)
    snprintf(threads, sizeof threads, "%d thread%s", p->threads, p->threads == 1 ? "" : "s");
  else
    snprintf(threads, sizeof threads, "%d-%d threads", p->min_threads, p->max_threads);
  int n = snprintf(buf, size, "ranks: %d x %s (%d core%s, %d local rank%s", world, threads,
                   p->node_cores, p->node_cores == 1 ? "" : "s", p->local_ranks,
                   p->local_ranks == 1 ? "" : "s");
  if (n < 0 || (size_t)n >= size) return;
  if (p->sharing > p->job_sharing) {
    int others = p->sharing - p->job_sharing;
    n += snprintf(buf + n, size - (size_t)n, ", %d other dtrain process%s on these cores", others,
                  others == 1 ? "" : "es");
    if ((size_t)n >= size) return;
  }
  if (p->source == DT_THREADS_SHARE)
    snprintf(buf + n, size - (size_t)n, ")");
  else
    snprintf(buf + n, size - (size_t)n, "; threads from %s)", source_name(p->source));
}

void dt_thread_plan_warning(const dt_thread_plan *p, char *buf, size_t size) {
  if (p->threads > p->cores)
    snprintf(buf, size,
             "warning: %d compute threads (%s) on the %d core%s of this rank's affinity mask: "
             "threads that wait for each other on one core run far slower than one thread",
             p->threads, source_name(p->source), p->cores, p->cores == 1 ? "" : "s");
  else if (p->source == DT_THREADS_SHARE && p->local_ranks > p->node_cores)
    snprintf(buf, size,
             "warning: %d local ranks on %d core%s: each rank runs one compute thread and the "
             "ranks take turns on the cores; start at most %d rank%s on this node",
             p->local_ranks, p->node_cores, p->node_cores == 1 ? "" : "s", p->node_cores,
             p->node_cores == 1 ? "" : "s");
  else
    snprintf(buf, size,
             "warning: %d local ranks start %d compute threads in all on %d cores%s: ranks that "
             "share cores run far slower than fewer threads would; leave train.threads at 0 and "
             "OMP_NUM_THREADS unset, or bind each rank to its own cores (README \"Threads, ranks "
             "and binding\")",
             p->local_ranks, p->node_threads, p->node_cores,
             p->source == DT_THREADS_SHARE ? "" : p->source == DT_THREADS_CONFIG ? " (train.threads)"
                                                                                 : " (OMP_NUM_THREADS)");
}

void dt_thread_plan_describe_rank(const dt_thread_plan *p, int rank, int world, char *buf,
                                  size_t size) {
  int others = p->sharing - p->job_sharing;
  char other[64] = "";
  if (others > 0)
    snprintf(other, sizeof other, " and %d other dtrain process%s", others,
             others == 1 ? "" : "es");
  snprintf(buf, size,
           "threads: rank %d of %d: %d compute thread%s + %d loader thread%s; its mask has %d "
           "core%s, shared by %d local rank%s%s (%s)",
           rank, world, p->threads, p->threads == 1 ? "" : "s", p->loader_threads,
           p->loader_threads == 1 ? "" : "s", p->cores, p->cores == 1 ? "" : "s",
           p->job_sharing, p->job_sharing == 1 ? "" : "s", other, source_name(p->source));
}

int dt_thread_plan_start(dt_comm *comm, const dt_config *cfg, dt_device device,
                         dt_thread_plan *plan, dt_share **share, char *line, size_t size) {
  int world = dt_comm_size(comm);
  dt_share *reg = NULL;
  if (device == DT_DEVICE_CPU) {
    if (dt_share_enabled()) {
      char dir[512];
      dt_share_default_dir(dir, sizeof dir);
      dt_cpu_mask mask;
      dt_cpu_mask_self(&mask);
      reg = dt_share_join(dir, &mask, NULL, 0);
    }
    dt_comm_barrier(comm); /* the job's ranks have joined before any of them counts */
  }
  dt_thread_plan p;
  dt_thread_plan_local(&p, comm, cfg, reg);
  if (share)
    *share = reg;
  else
    dt_share_leave(reg);
  if (plan) *plan = p;
  if (device != DT_DEVICE_CPU) {
    snprintf(line, size, "ranks: %d (%d on this node)", world, p.local_ranks);
    return (int)cfg->train_threads;
  }
  char desc[160];
  dt_thread_plan_describe(&p, world, desc, sizeof desc);
  snprintf(line, size, "%s, OpenMP wait %s", desc, dt_wait_policy_describe());
  if (p.oversubscribed && dt_comm_local_rank(comm) == 0) {
    char warn[400];
    dt_thread_plan_warning(&p, warn, sizeof warn);
    fflush(stdout); /* whole lines where both go to one file */
    fprintf(stderr, "dtrain: %s\n", warn);
  }
  return p.threads;
}

/* ---- wait policy ---- */

dt_wait_policy dt_wait_policy_choose(int mask_cores, int online, int launcher_local_ranks,
                                     int omp_threads) {
  if (launcher_local_ranks > 1 && (long)launcher_local_ranks * mask_cores > online)
    return DT_WAIT_PASSIVE;
  if (omp_threads > mask_cores) return DT_WAIT_PASSIVE;
  return DT_WAIT_RUNTIME;
}

/* Ranks the launcher started on this node: Open MPI's mpirun, MPICH's Hydra, Slurm's srun
 * (which writes "4" or "4(x2)"; the first number is this node's when the nodes match). */
static int launcher_local_ranks(void) {
  static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                               "SLURM_STEP_TASKS_PER_NODE"};
  for (size_t i = 0; i < DT_ARRAY_LEN(vars); i++) {
    const char *v = getenv(vars[i]);
    if (!v) continue;
    char *end;
    long k = strtol(v, &end, 10);
    if (end != v && k >= 1) return k > 4096 ? 4096 : (int)k;
  }
  return 1;
}

static char g_wait_note[256];

void dt_wait_policy_apply(char **argv) {
  const char *done = getenv("DTRAIN_WAIT_POLICY");
  if (done) {
    snprintf(g_wait_note, sizeof g_wait_note, "%s", done);
    return;
  }
  const char *user = getenv("OMP_WAIT_POLICY");
  const char *spin = getenv("GOMP_SPINCOUNT");
  if (user || spin) {
    snprintf(g_wait_note, sizeof g_wait_note, "%s%s%s%s%s", user ? "OMP_WAIT_POLICY=" : "",
             user ? user : "", user && spin ? ", " : "", spin ? "GOMP_SPINCOUNT=" : "",
             spin ? spin : "");
    return;
  }
  dt_cpu_mask self;
  dt_cpu_mask_self(&self);
  int cores = dt_cpu_mask_count(&self), online = online_cpus(), local = launcher_local_ranks();
  int omp = dt_thread_plan_parse_omp(getenv("OMP_NUM_THREADS"));
  if (dt_wait_policy_choose(cores, online, local, omp) == DT_WAIT_RUNTIME) {
    snprintf(g_wait_note, sizeof g_wait_note, "spin, then sleep (the OpenMP default)");
    return;
  }
  char note[160];
  if (local > 1 && (long)local * cores > online)
    snprintf(note, sizeof note, "passive (%d local ranks on masks of %d of %d CPUs)", local,
             cores, online);
  else
    snprintf(note, sizeof note, "passive (OMP_NUM_THREADS=%d on %d core%s)", omp, cores,
             cores == 1 ? "" : "s");
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0 || setenv("DTRAIN_WAIT_POLICY", note, 1) != 0)
    return;
  execv("/proc/self/exe", argv);
  /* No re-execution (no /proc): the default stays, and the line says so. */
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("DTRAIN_WAIT_POLICY");
  snprintf(g_wait_note, sizeof g_wait_note, "spin, then sleep (the OpenMP default; %s not applied)",
           note);
}

const char *dt_wait_policy_describe(void) { return g_wait_note; }
