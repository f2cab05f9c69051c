/* atomic.h: the one way dtrain replaces a file (checkpoints, config.ini, --dump-batch): the
 * writer fills a temporary file in the target's directory and closes it; dt_atomic_replace
 * makes its bytes durable, renames it over the target and makes the rename durable, so a
 * crash at any point leaves either the old file or the complete new one under the name. */
#ifndef DT_ATOMIC_H
#define DT_ATOMIC_H

#include "common.h"

/* fsync `tmp`, rename it over `path`, fsync the directory of `path`. On failure the temporary
 * file is removed and DT_ERR_IO carries one message starting with `label` (the file's role,
 * e.g. "checkpoint run/checkpoints/step_000000020.h5") and naming the step that failed. */
dt_status dt_atomic_replace(const char *tmp, const char *path, const char *label);

#endif
