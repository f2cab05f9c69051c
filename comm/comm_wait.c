/* comm_wait.c: the bounded wait for a device collective (comm_wait.h). */
#include "comm/comm_wait.h"

#include <stdio.h>
#include <time.h>

#include "common.h"

static double wait_now(const dt_comm_wait_probes *p) { return p->now ? p->now(p->ctx) : dt_now(); }

static void wait_pause(const dt_comm_wait_probes *p, double seconds) {
  if (p->sleep) {
    p->sleep(p->ctx, seconds);
    return;
  }
  struct timespec ts = {0, (long)(seconds * 1e9)};
  nanosleep(&ts, NULL);
}

dt_comm_wait_result dt_comm_wait(const dt_comm_wait_probes *p, double timeout_s, int *code,
                                 double *waited) {
  *code = 0;
  const double t0 = wait_now(p);
  double pause = 0;
  dt_comm_wait_result result;
  for (;;) {
    const int d = p->done(p->ctx);
    if (d > 0) {
      result = DT_COMM_WAIT_DONE;
      break;
    }
    if (d < 0) {
      result = DT_COMM_WAIT_QUERY_ERROR;
      break;
    }
    const int e = p->async_error(p->ctx);
    if (e != 0) {
      *code = e;
      result = DT_COMM_WAIT_ASYNC_ERROR;
      break;
    }
    if (timeout_s > 0 && wait_now(p) - t0 >= timeout_s) {
      result = DT_COMM_WAIT_TIMEOUT;
      break;
    }
    /* A few polls back to back, then pauses doubling from 1 us to the cap. */
    if (pause > 0) wait_pause(p, pause);
    pause = pause == 0 ? 1e-6 : DT_MIN(2 * pause, DT_COMM_WAIT_MAX_PAUSE);
  }
  *waited = wait_now(p) - t0;
  return result;
}

void dt_comm_wait_message(char *buf, size_t size, dt_comm_wait_result result, int code,
                          const char *reason, int rank, int world, int device,
                          const char *collective, double waited, double timeout_s) {
  switch (result) {
  case DT_COMM_WAIT_DONE:
    snprintf(buf, size, "%s on rank %d of %d (GPU %d) finished", collective, rank, world, device);
    break;
  case DT_COMM_WAIT_ASYNC_ERROR:
    snprintf(buf, size, "%s failed on rank %d of %d (GPU %d) after %.1f s: NCCL error %d: %s "
             "(a peer rank died or lost its connection?); aborting the communicator",
             collective, rank, world, device, waited, code, reason ? reason : "");
    break;
  case DT_COMM_WAIT_QUERY_ERROR:
    snprintf(buf, size, "%s failed on rank %d of %d (GPU %d) after %.1f s: device error: %s; "
             "aborting the communicator", collective, rank, world, device, waited,
             reason ? reason : "");
    break;
  case DT_COMM_WAIT_TIMEOUT:
    snprintf(buf, size, "%s did not finish on rank %d of %d (GPU %d) within comm.timeout_s = "
             "%g s (a peer rank died or hangs?); aborting the communicator",
             collective, rank, world, device, timeout_s);
    break;
  }
}
