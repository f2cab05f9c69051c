/* common.h: status codes, the error message buffer of the input-error tier, and the
 * fatal-check macro family of the runtime-error tier (docs/architecture.md "Errors"). */
#ifndef DT_COMMON_H
#define DT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Input errors (config, dataset files, checkpoints, CLI) return a dt_status up the stack.
 * The convention, everywhere (src/io/ included): a function that fails returns a dt_status
 * other than DT_OK and has put one message in the error slot with dt_error_set(); a caller
 * that passes a callee's failure up returns that status without a message of its own (or
 * with one that quotes the callee's), and whoever reports the failure (main, the trainer,
 * a warning) prints dt_error_message(). */
typedef enum {
  DT_OK = 0,
  DT_ERR_CONFIG = 1,   /* bad configuration or command line */
  DT_ERR_DATA = 2,     /* missing, truncated or corrupt dataset file */
  DT_ERR_IO = 3,       /* output directory or file cannot be written */
  DT_ERR_NOMEM = 4,
} dt_status;

/* Record the message of an error (printf format), replacing the one before: the latest
 * failure's message is the one reported, so an earlier failure that was reported as a
 * warning and survived never masks a later error. Returns `status` so that
 * `return dt_error_set(DT_ERR_DATA, ...)` reads well. dt_error_message() is "unknown error"
 * when nothing was recorded since the start or the last dt_error_clear(). */
dt_status dt_error_set(dt_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *dt_error_message(void);
void dt_error_clear(void);

/* Runtime-error tier: print the failed expression, file:line, rank and host, then abort
 * every rank with exit status DT_EXIT_FATAL (out of memory, a CUDA, cuDNN, NCCL, MPI or HDF5
 * failure, a failed internal check). dt_fatal never returns. */
#define DT_EXIT_FATAL 3
_Noreturn void dt_fatal(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define DT_FATAL(...) dt_fatal(__FILE__, __LINE__, __VA_ARGS__)
/* How dt_fatal names this process and takes every rank down: the process group installs
 * both when it starts (dt_comm_init), since this ground floor knows nothing above it. Until
 * then (and after a NULL) the rank printed is 0 and the abort is exit(code). */
typedef struct {
  int (*world_rank)(void);        /* this process's rank, for the message */
  void (*abort_all)(int code);    /* every rank exits with code; does not return */
} dt_fatal_hooks;
void dt_fatal_set_hooks(const dt_fatal_hooks *hooks);
#define DT_CHECK(cond)                                            \
  do {                                                            \
    if (!(cond)) dt_fatal(__FILE__, __LINE__, "check failed: %s", #cond); \
  } while (0)

/* Allocation that never returns NULL (out of memory is fatal). */
void *dt_xmalloc(size_t bytes);
void *dt_xcalloc(size_t count, size_t size);
/* 64-byte aligned allocation for arenas and activations; free with free(). */
void *dt_xaligned(size_t bytes);
char *dt_xstrdup(const char *s);

double dt_now(void); /* monotonic seconds */

/* The size of every path buffer (Linux's PATH_MAX: no longer path can be opened). A path
 * that does not fit is an error naming it, never a truncated name. */
#define DT_PATH_MAX 4096

#define DT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define DT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
