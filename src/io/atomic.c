/* atomic.c: temporary file, fsync, rename, fsync of the directory (atomic.h). */
#define _GNU_SOURCE
#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* fsync a file or directory by name; 0 on success, else -1 with errno set. */
static int fsync_path(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

dt_status dt_atomic_replace(const char *tmp, const char *path, const char *label) {
  if (fsync_path(tmp, O_RDONLY) < 0) {
    const int e = errno;
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "%s: fsync of %s failed: %s", label, tmp, strerror(e));
  }
  if (rename(tmp, path) < 0) {
    const int e = errno;
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "%s: cannot rename %s over %s: %s", label, tmp, path,
                        strerror(e));
  }
  /* Make the rename itself durable: the directory of path ("." when it names none). */
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash == path)
    snprintf(dir, sizeof dir, "/");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  if (fsync_path(dir, O_RDONLY | O_DIRECTORY) < 0)
    return dt_error_set(DT_ERR_IO, "%s: fsync of directory %s failed: %s", label, dir,
                        strerror(errno));
  return DT_OK;
}
