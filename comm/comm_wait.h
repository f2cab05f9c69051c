/* comm_wait.h: the host's bounded wait for a device collective (comm_nccl.c), as pure C so
 * that its logic is tested without a GPU (tests/test_comm_wait.c). The caller supplies the
 * probes as callbacks: is the work done (a CUDA event query), has the communicator failed
 * (ncclCommGetAsyncError), the clock and the pause between polls. A peer that died leaves the
 * collective unfinished forever; this loop turns that into an error (the communicator's own)
 * or a timeout, so that the caller can abort the communicator and exit instead of hanging. */
#ifndef DT_COMM_WAIT_H
#define DT_COMM_WAIT_H

#include <stddef.h>

typedef struct {
  void *ctx;
  /* 1: the work is done; 0: not yet; -1: the query itself failed (a device error). */
  int (*done)(void *ctx);
  /* 0 while the communicator is healthy, else its error code (ncclResult_t). */
  int (*async_error)(void *ctx);
  /* Monotonic seconds, and a pause of about `seconds`. NULL: dt_now and nanosleep. */
  double (*now)(void *ctx);
  void (*sleep)(void *ctx, double seconds);
} dt_comm_wait_probes;

typedef enum {
  DT_COMM_WAIT_DONE,        /* the work finished */
  DT_COMM_WAIT_ASYNC_ERROR, /* the communicator reported an error (*code) */
  DT_COMM_WAIT_QUERY_ERROR, /* the completion query failed */
  DT_COMM_WAIT_TIMEOUT,     /* still unfinished after timeout_s seconds */
} dt_comm_wait_result;

/* The longest pause between two polls: the wait adds at most this to a collective's time. */
#define DT_COMM_WAIT_MAX_PAUSE 1e-4

/* Poll p->done until it reports completion, checking p->async_error after each unfinished
 * poll and giving up once timeout_s seconds have passed since the call (timeout_s <= 0: no
 * limit). Pauses grow from none (a collective that is about to end costs no sleep) to
 * DT_COMM_WAIT_MAX_PAUSE. Returns how the wait ended; *code receives the async error code for
 * DT_COMM_WAIT_ASYNC_ERROR (0 otherwise), *waited the seconds spent. */
dt_comm_wait_result dt_comm_wait(const dt_comm_wait_probes *p, double timeout_s, int *code,
                                 double *waited);

/* The message of a failed wait, naming the rank, its GPU, the collective and what happened
 * (reason: the communicator's error text for DT_COMM_WAIT_ASYNC_ERROR, the device error for
 * DT_COMM_WAIT_QUERY_ERROR, ignored for a timeout). Writes at most size bytes to buf. */
void dt_comm_wait_message(char *buf, size_t size, dt_comm_wait_result result, int code,
                          const char *reason, int rank, int world, int device,
                          const char *collective, double waited, double timeout_s);

#endif
