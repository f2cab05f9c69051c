/* rundir.c: the run directory's lock and the configuration changes a --resume may make. */
#define _GNU_SOURCE
#include "io/rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

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
