/* thread_share.c: the node-wide registry of dtrain processes and the share recounted while
 * training (thread_share.h). */
#define _GNU_SOURCE /* O_CLOEXEC with older glibc headers */
#include "thread_share.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

struct dt_share {
  char dir[512];
  char path[600]; /* dir/name */
  char name[48];  /* p<pid>-<start time> */
  dt_cpu_mask mask;
  int fd; /* the entry, locked exclusively while the process lives */
};

void dt_share_default_dir(char *buf, size_t size) {
  const char *env = getenv("DTRAIN_SHARE_DIR");
  if (env && env[0]) {
    snprintf(buf, size, "%s", env);
    return;
  }
  struct stat sb;
  const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
  snprintf(buf, size, "%s/dtrain-%lu", base, (unsigned long)getuid());
}

bool dt_share_enabled(void) {
  const char *v = getenv("DTRAIN_SHARE");
  return !(v && strcmp(v, "0") == 0);
}

/* Writes the entry: a temporary name, locked and filled, then renamed into place, so that a
 * reader never sees an entry that is not locked yet. */
static bool share_write(dt_share *s, char *why, size_t why_size) {
  char tmp[640];
  snprintf(tmp, sizeof tmp, "%s/.new-%ld", s->dir, (long)getpid());
  int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (why) snprintf(why, why_size, "cannot create %s: %s", tmp, strerror(errno));
    return false;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0 ||
      write(fd, &s->mask, sizeof s->mask) != (ssize_t)sizeof s->mask ||
      rename(tmp, s->path) != 0) {
    if (why) snprintf(why, why_size, "cannot write %s: %s", s->path, strerror(errno));
    close(fd);
    unlink(tmp);
    return false;
  }
  if (s->fd >= 0) close(s->fd);
  s->fd = fd;
  return true;
}

dt_share *dt_share_join(const char *dir, const dt_cpu_mask *mask, char *why, size_t why_size) {
  if (why && why_size) why[0] = 0;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    if (why) snprintf(why, why_size, "cannot create %s: %s", dir, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid()) {
    if (why) snprintf(why, why_size, "%s is not a directory of this user", dir);
    return NULL;
  }
  dt_share *s = dt_xcalloc(1, sizeof *s);
  s->fd = -1;
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  /* The pid and the start time: processes of two PID namespaces may share the directory. */
  snprintf(s->name, sizeof s->name, "p%ld-%llx", (long)getpid(),
           (unsigned long long)(dt_now() * 1e9));
  snprintf(s->path, sizeof s->path, "%s/%s", dir, s->name);
  s->mask = *mask;
  if (!share_write(s, why, why_size)) {
    free(s);
    return NULL;
  }
  return s;
}

/* Whether our own entry is still the file we hold (another process may have removed it). */
static bool share_entry_present(const dt_share *s) {
  struct stat a, b;
  return fstat(s->fd, &a) == 0 && stat(s->path, &b) == 0 && a.st_ino == b.st_ino &&
         a.st_dev == b.st_dev;
}

/* 1 when the entry `name` belongs to a live process whose mask overlaps s->mask, else 0; an
 * ended process's entry is removed (only when the name still names the file that was tested). */
static int share_entry_counts(const dt_share *s, const char *name) {
  char path[1100];
  snprintf(path, sizeof path, "%s/%s", s->dir, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int counts = 0;
  if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      unlink(path);
  } else if (errno == EWOULDBLOCK) {
    dt_cpu_mask m;
    if (pread(fd, &m, sizeof m, 0) == (ssize_t)sizeof m && dt_cpu_mask_overlaps(&m, &s->mask))
      counts = 1;
  }
  close(fd);
  return counts;
}

int dt_share_count(dt_share *s) {
  if (!share_entry_present(s)) share_write(s, NULL, 0);
  DIR *d = opendir(s->dir);
  if (!d) return 1;
  int n = 1; /* this process */
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] != 'p' || strcmp(e->d_name, s->name) == 0) continue;
    n += share_entry_counts(s, e->d_name);
  }
  closedir(d);
  return n;
}

void dt_share_leave(dt_share *s) {
  if (!s) return;
  if (s->fd >= 0) {
    if (share_entry_present(s)) unlink(s->path);
    close(s->fd);
  }
  free(s);
}

/* ---- the share while training ---- */

int dt_share_threads(const dt_thread_plan *p, int sharing) {
  int budget = DT_MAX(p->cores / DT_MAX(sharing, 1), 1);
  return budget - p->loader_threads >= 2 ? budget - p->loader_threads : budget;
}

void dt_share_watch_init(dt_share_watch *w, dt_share *share, const dt_thread_plan *plan,
                         double interval) {
  memset(w, 0, sizeof *w);
  w->plan = *plan;
  w->threads = plan->threads;
  w->sharing = plan->sharing;
  w->interval = interval;
  w->share = plan->source == DT_THREADS_SHARE ? share : NULL;
}

int dt_share_watch_poll(dt_share_watch *w, double now, int *before) {
  if (!w->share || now < w->next) return 0;
  w->next = now + w->interval;
  int sharing = DT_MAX(dt_share_count(w->share), w->plan.job_sharing);
  w->sharing = sharing;
  int t = dt_share_threads(&w->plan, sharing);
  if (t == w->threads) return 0;
  if (before) *before = w->threads;
  w->threads = t;
  return t;
}

void dt_share_describe_change(const dt_share_watch *w, int before, char *buf, size_t size) {
  int others = w->sharing - w->plan.job_sharing;
  char why[160];
  if (others <= 0)
    snprintf(why, sizeof why, "no other dtrain process shares these cores now");
  else if (others == 1)
    snprintf(why, sizeof why, "another dtrain process shares these cores");
  else
    snprintf(why, sizeof why, "%d other dtrain processes share these cores", others);
  snprintf(buf, size, "threads: %d -> %d (%s; %d core%s, %d process%s on them)", before,
           w->threads, why, w->plan.cores, w->plan.cores == 1 ? "" : "s", w->sharing,
           w->sharing == 1 ? "" : "es");
}
