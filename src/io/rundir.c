/* rundir.c: the run directory: creating and locking it, config.ini, log.txt and metrics.h5
 * for the run, clean-up, and the configuration changes a --resume may make (rundir.h). */
#define _GNU_SOURCE
#include "io/rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic.h"
#include "io/checkpoint.h"

dt_status dt_rundir_lock(const char *dir, int *fd) {
  *fd = -1;
  char path[DT_PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, DT_RUNDIR_LOCK) >= sizeof path)
    return dt_error_set(DT_ERR_IO, "output.dir %s: path too long", dir);
  int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (f < 0)
    return dt_error_set(DT_ERR_IO, "output.dir %s: cannot create the lock file %s: %s", dir, path,
                        strerror(errno));
  if (flock(f, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    char holder[300] = "";
    ssize_t n = pread(f, holder, sizeof holder - 1, 0);
    close(f);
    if (e != EWOULDBLOCK)
      return dt_error_set(DT_ERR_IO, "output.dir %s: cannot lock %s: %s", dir, path, strerror(e));
    holder[n > 0 ? n : 0] = 0;
    long pid = 0;
    char host[256] = "?", who[300] = "whose pid and host are not recorded";
    if (sscanf(holder, "pid %ld host %255s", &pid, host) == 2)
      snprintf(who, sizeof who, "pid %ld on host %s", pid, host);
    return dt_error_set(DT_ERR_IO,
                        "output.dir %s is in use by another dtrain process (%s holds %s): wait "
                        "for it to end or stop it, then --resume %s",
                        dir, who, path, dir);
  }
  *fd = f;
  return DT_OK;
}

void dt_rundir_lock_note(int fd) {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = 0;
  char text[320];
  int len = snprintf(text, sizeof text, "pid %ld host %s\n", (long)getpid(), host);
  /* Only informs: the flock is the lock, even where the text cannot be written (a full disk,
   * on which the run then fails writing config.ini). */
  if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) text[0] = 0;
}

void dt_rundir_init(dt_rundir *rd, const char *path) {
  memset(rd, 0, sizeof *rd);
  rd->path = path;
  rd->lock_fd = -1;
}

dt_status dt_rundir_take(dt_rundir *rd) {
  if (rd->lock_fd >= 0) return DT_OK;
  return dt_rundir_lock(rd->path, &rd->lock_fd);
}

/* Create dir and its missing parents; *created: the topmost one this call created
 * (malloc'ed), NULL when dir existed. */
static dt_status make_dirs(const char *dir, char **created) {
  char path[4096];
  *created = NULL;
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1;; p++) {
    if (*p != '/' && *p != 0) continue;
    char c = *p;
    *p = 0;
    if (mkdir(path, 0777) == 0) {
      if (!*created) *created = dt_xstrdup(path);
    } else if (errno != EEXIST) {
      return dt_error_set(DT_ERR_IO, "output.dir %s: cannot create %s: %s", dir, path,
                          strerror(errno));
    }
    *p = c;
    if (c == 0) break;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return dt_error_set(DT_ERR_IO, "output.dir %s: not a directory", dir);
  if (access(dir, W_OK | X_OK) != 0)
    return dt_error_set(DT_ERR_IO, "output.dir %s: not writable: %s", dir, strerror(errno));
  return DT_OK;
}

/* Write the config as run to dir/config.ini through a temporary file (dt_atomic_replace). */
static dt_status write_config(const dt_config *cfg, const char *dir) {
  char path[4200], tmp[4200], label[4200];
  snprintf(path, sizeof path, "%s/config.ini", dir);
  snprintf(tmp, sizeof tmp, "%s/.config.ini.tmp", dir);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return dt_error_set(DT_ERR_IO, "output.dir %s: cannot write %s: %s", dir, tmp, strerror(errno));
  dt_config_write(cfg, f);
  const bool written = fflush(f) == 0 && !ferror(f);
  const int e = errno;
  if (fclose(f) != 0 || !written) {
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "output.dir %s: writing config.ini failed: %s", dir,
                        strerror(written ? errno : e));
  }
  snprintf(label, sizeof label, "output.dir %s", dir);
  return dt_atomic_replace(tmp, path, label);
}

dt_status dt_rundir_open(dt_rundir *rd, const dt_config *cfg, long resume_step,
                         bool rewrite_config) {
  const char *dir = rd->path;
  const bool resume = resume_step >= 0;
  char path[4200];
  if (!resume) {
    dt_status st = make_dirs(dir, &rd->created);
    if (st != DT_OK) return st;
    st = dt_rundir_take(rd);
    if (st != DT_OK) return st;
    snprintf(path, sizeof path, "%s/config.ini", dir);
    if (!cfg->output_overwrite && access(path, F_OK) == 0)
      return dt_error_set(DT_ERR_IO,
                          "output.dir %s already holds a run (config.ini); continue it with "
                          "--resume %s, choose another directory, or set output.overwrite=true",
                          dir, dir);
    dt_rundir_lock_note(rd->lock_fd);
    if (cfg->output_overwrite) {
      /* Old checkpoints and metrics would mix with the new run's. */
      snprintf(path, sizeof path, "%s/metrics.h5", dir);
      unlink(path);
      dt_checkpoint_remove(dir, false);
    }
    st = write_config(cfg, dir);
    if (st != DT_OK) return st;
  }
  if (resume) {
    /* The lock was taken before the checkpoint was chosen. */
    DT_CHECK(rd->lock_fd >= 0);
    dt_rundir_lock_note(rd->lock_fd);
    dt_status st = rewrite_config ? write_config(cfg, dir) : DT_OK;
    if (st != DT_OK) return st;
    dt_checkpoint_remove(dir, true);
  }
  snprintf(path, sizeof path, "%s/log.txt", dir);
  rd->log = fopen(path, resume || !cfg->output_overwrite ? "a" : "w");
  if (!rd->log)
    return dt_error_set(DT_ERR_IO, "output.dir %s: cannot write log.txt: %s", dir, strerror(errno));
  snprintf(path, sizeof path, "%s/metrics.h5", dir);
  dt_status st = dt_metrics_open(&rd->metrics, path, resume_step);
  /* output.tensorboard: the metrics rows also go to TensorBoard events (io/metrics.h). */
  if (st == DT_OK && cfg->output_tensorboard) {
    snprintf(path, sizeof path, "%s/tensorboard", dir);
    dt_metrics_tensorboard(rd->metrics, path, resume_step);
  }
  return st;
}

void dt_rundir_started(dt_rundir *rd) {
  free(rd->created);
  rd->created = NULL;
}

void dt_rundir_abandon(dt_rundir *rd) {
  if (!rd->created) return;
  if (rd->log) fclose(rd->log);
  rd->log = NULL;
  if (rd->metrics) dt_metrics_close(rd->metrics);
  rd->metrics = NULL;
  static const char *const files[] = {"config.ini", ".config.ini.tmp", "log.txt", "metrics.h5",
                                      DT_RUNDIR_LOCK};
  char path[4200];
  for (size_t i = 0; rd->lock_fd >= 0 && i < DT_ARRAY_LEN(files); i++) {
    snprintf(path, sizeof path, "%s/%s", rd->path, files[i]);
    unlink(path);
  }
  if (rd->lock_fd >= 0) close(rd->lock_fd);
  rd->lock_fd = -1;
  /* From the run directory up to the topmost one created; rmdir keeps anything not empty. */
  snprintf(path, sizeof path, "%s", rd->path);
  const size_t top = strlen(rd->created);
  for (;;) {
    if (rmdir(path) != 0 || strlen(path) <= top) break;
    char *slash = strrchr(path, '/');
    if (!slash || slash == path) break;
    *slash = 0;
  }
  free(rd->created);
  rd->created = NULL;
}

void dt_rundir_close(dt_rundir *rd) {
  if (rd->metrics) dt_metrics_close(rd->metrics);
  rd->metrics = NULL;
  if (rd->log) fclose(rd->log);
  rd->log = NULL;
  if (rd->lock_fd >= 0) close(rd->lock_fd); /* the kernel would release it at exit too */
  rd->lock_fd = -1;
  free(rd->created);
  rd->created = NULL;
}

/* Keys fixed for the life of a run: "section." for a whole section, else "section.key". */
static const char *const g_fixed[] = {
    "model.",          "data.dataset",  "data.train_limit", "data.test_limit",
    "train.batch_size", "train.seed",   "optim.name",       "output.dir",
};

static bool dt_rundir_fixed(const char *section, const char *key) {
  for (size_t i = 0; i < DT_ARRAY_LEN(g_fixed); i++) {
    const char *f = g_fixed[i], *dot = strchr(f, '.');
    const size_t n = (size_t)(dot - f);
    if (strlen(section) != n || strncmp(section, f, n) != 0) continue;
    if (dot[1] == 0 || strcmp(dot + 1, key) == 0) return true;
  }
  return false;
}

/* The written forms of the two configurations come from one table, so they have the same
 * lines in the same order: comments and [section] headers alike, key lines differing only
 * in their values. */
dt_status dt_rundir_config_changes(const dt_config *before, const dt_config *after,
                                   const char *run_dir, char **changes) {
  *changes = NULL;
  char *a = dt_config_text(before), *b = dt_config_text(after);
  char *out = NULL;
  size_t out_len = 0;
  FILE *o = open_memstream(&out, &out_len);
  DT_CHECK(o != NULL);
  dt_status st = DT_OK;
  char section[64] = "";
  char *sa = NULL, *sb = NULL;
  char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb);
  int n_changes = 0;
  for (; la && lb && st == DT_OK; la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb)) {
    if (la[0] == '[') {
      snprintf(section, sizeof section, "%.*s", (int)strcspn(la + 1, "]"), la + 1);
      continue;
    }
    if (la[0] == ';' || strcmp(la, lb) == 0) continue;
    const size_t key_len = strcspn(la, " =");
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)key_len, la);
    const char *va = strchr(la, '='), *vb = strchr(lb, '=');
    DT_CHECK(va && vb && strncmp(la, lb, key_len) == 0); /* one table: the same key */
    va += 1 + (va[1] == ' ');
    vb += 1 + (vb[1] == ' ');
    if (dt_rundir_fixed(section, key)) {
      st = dt_error_set(DT_ERR_CONFIG,
                        "--resume %s: --set %s.%s=%s: %s.%s cannot change in the middle of a run "
                        "(the run has %s; the model, the data, the global batch, the seed, the "
                        "optimizer and the run directory are fixed for its checkpoints): start a "
                        "new run for it",
                        run_dir, section, key, vb, section, key, *va ? va : "(empty)");
      break;
    }
    fprintf(o, "%s%s.%s = %s -> %s", n_changes++ ? ", " : "", section, key, *va ? va : "(empty)",
            *vb ? vb : "(empty)");
  }
  const int closed = fclose(o);
  DT_CHECK(closed == 0);
  free(a);
  free(b);
  if (st != DT_OK || n_changes == 0) {
    free(out);
    return st;
  }
  *changes = out;
  return DT_OK;
}
