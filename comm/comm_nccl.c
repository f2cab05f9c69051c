/* comm_nccl.c: the device collectives of comm.h over NCCL, for builds with the CUDA backend.
 *
 * One communicator per process on the current CUDA device, bootstrapped through the host comm
 * (rank 0's unique id goes out with dt_comm_broadcast). All-reduces run on a stream of their
 * own, created with the highest priority so that a bucket's reduction is scheduled ahead of the
 * backward kernels queued behind it, and non-blocking so that the legacy default stream (which
 * cudaMemset and friends use) never serialises it. Ordering between the compute stream and
 * the comm stream uses two events, each re-recorded on every use: cudaStreamWaitEvent waits
 * for the event's state at the time of the call, so re-recording it afterwards does not affect
 * waits already enqueued, and no pool or per-call cudaEventCreate is needed.
 *
 * Errors after creation are fatal: the NCCL communicator is aborted first (cheap, and it frees
 * this rank's NCCL resources without waiting for peers that may never arrive), then DT_FATAL
 * takes every rank down.
 *
 * A peer that dies mid-collective leaves this rank's all-reduce unfinished forever, and NCCL
 * reports it (ncclCommGetAsyncError) only when its transport notices, if ever. So the host
 * never blocks on NCCL's work, or on a compute stream that waits for it, with a plain
 * synchronize: dt_comm_nccl_wait (and shutdown) wait for an event in dt_comm_wait's loop,
 * which polls the communicator's error and gives up after comm.timeout_s
 * (dt_comm_nccl_set_timeout), then aborts as above. The join itself does not block the host:
 * the compute stream waits for the sums on the device, and the step's one wait covers both. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#include "comm.h"
#include "comm/comm_wait.h"
#include "common.h"

struct dt_comm_nccl {
  ncclComm_t comm;
  cudaStream_t stream;   /* the all-reduces run here */
  cudaEvent_t ready;     /* compute stream -> comm stream: the bucket's gradients are written */
  cudaEvent_t done;      /* comm stream -> compute stream: the all-reduces so far are over */
  cudaEvent_t settled;   /* the host's bounded wait: the compute stream's work so far is over */
  bool pending;          /* all-reduces enqueued since the last join */
  size_t pending_count, pending_bytes; /* ... how many, and their size, for messages */
  size_t joined_count, joined_bytes;   /* joined since the last wait, for its message */
  double timeout_s;      /* the longest wait for a join (<= 0: none) */
  cudaEvent_t waiting;   /* the event a bounded wait is polling (done or settled) */
  cudaError_t query_error; /* the failed cudaEventQuery of a wait, for its message */
  int rank, size, device;
  double host_seconds;
  size_t allreduces, bytes;
};

/* The fatal path of both check macros: abort the communicator, then every rank. */
/* NCCL's last error message; comm may be NULL (the message is per thread). */
static const char *comm_nccl_last_error(const dt_comm_nccl *nc) {
  return ncclGetLastError(nc ? nc->comm : NULL);
}

_Noreturn static void comm_nccl_fail(dt_comm_nccl *nc, const char *file, int line,
                                     const char *what) {
  if (nc && nc->comm) {
    (void)ncclCommAbort(nc->comm);
    nc->comm = NULL;
  }
  dt_fatal(file, line, "%s", what);
}

#define DT_COMM_NCCL_CHECK(nc, expr)                                                     \
  do {                                                                                   \
    ncclResult_t dt_nccl_r_ = (expr);                                                    \
    if (dt_nccl_r_ != ncclSuccess) {                                                     \
      char dt_nccl_m_[768];                                                              \
      snprintf(dt_nccl_m_, sizeof dt_nccl_m_, "NCCL call %s failed: %s (%d): %s", #expr, \
               ncclGetErrorString(dt_nccl_r_), (int)dt_nccl_r_, comm_nccl_last_error(nc)); \
      comm_nccl_fail((nc), __FILE__, __LINE__, dt_nccl_m_);                              \
    }                                                                                    \
  } while (0)

#define DT_COMM_CUDA_CHECK(nc, expr)                                                     \
  do {                                                                                   \
    cudaError_t dt_cuda_e_ = (expr);                                                     \
    if (dt_cuda_e_ != cudaSuccess) {                                                     \
      char dt_cuda_m_[512];                                                              \
      snprintf(dt_cuda_m_, sizeof dt_cuda_m_, "CUDA call %s failed: %s (%s, error %d)",  \
               #expr, cudaGetErrorString(dt_cuda_e_), cudaGetErrorName(dt_cuda_e_),      \
               (int)dt_cuda_e_);                                                         \
      comm_nccl_fail((nc), __FILE__, __LINE__, dt_cuda_m_);                              \
    }                                                                                    \
  } while (0)

/* ---- the bounded wait (comm_wait.h) on the event `done` ---- */

static int comm_nccl_probe_done(void *ctx) {
  dt_comm_nccl *nc = ctx;
  const cudaError_t e = cudaEventQuery(nc->waiting);
  if (e == cudaSuccess) return 1;
  if (e == cudaErrorNotReady) return 0;
  nc->query_error = e;
  return -1;
}

static int comm_nccl_probe_error(void *ctx) {
  dt_comm_nccl *nc = ctx;
  ncclResult_t async = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(nc->comm, &async);
  if (r != ncclSuccess) return (int)r;
  /* ncclInProgress: a non-blocking communicator still working, not an error. */
  return async == ncclInProgress ? 0 : (int)async;
}

/* Block the host until everything enqueued on `stream` so far has finished, or fail (abort the
 * communicator, then every rank) with a message naming the collective. event: recorded on
 * stream and polled. */
static void comm_nccl_wait_on(dt_comm_nccl *nc, cudaStream_t stream, cudaEvent_t event,
                              const char *collective) {
  DT_COMM_CUDA_CHECK(nc, cudaEventRecord(event, stream));
  nc->waiting = event;
  const dt_comm_wait_probes probes = {nc, comm_nccl_probe_done, comm_nccl_probe_error, NULL, NULL};
  int code = 0;
  double waited = 0;
  const dt_comm_wait_result r = dt_comm_wait(&probes, nc->timeout_s, &code, &waited);
  if (r == DT_COMM_WAIT_DONE) return;
  const char *reason = r == DT_COMM_WAIT_ASYNC_ERROR ? comm_nccl_last_error(nc)
                       : r == DT_COMM_WAIT_QUERY_ERROR ? cudaGetErrorString(nc->query_error)
                                                       : "";
  char reason_buf[512];
  if (r == DT_COMM_WAIT_ASYNC_ERROR) {
    snprintf(reason_buf, sizeof reason_buf, "%s%s%s", ncclGetErrorString((ncclResult_t)code),
             reason && *reason ? ": " : "", reason ? reason : "");
    reason = reason_buf;
  }
  char msg[900];
  dt_comm_wait_message(msg, sizeof msg, r, code, reason, nc->rank, nc->size, nc->device,
                       collective, waited, nc->timeout_s);
  comm_nccl_fail(nc, __FILE__, __LINE__, msg);
}

void dt_comm_nccl_set_timeout(dt_comm_nccl *nc, double seconds) { nc->timeout_s = seconds; }

/* This rank's half of the set-up that may fail without harm: a current device and the comm
 * stream on it. Returns false with the error recorded (dt_error_set). */
static bool comm_nccl_prepare(dt_comm_nccl *nc) {
  int least = 0, greatest = 0;
  cudaError_t e = cudaGetDevice(&nc->device);
  if (e == cudaSuccess) e = cudaDeviceGetStreamPriorityRange(&least, &greatest);
  if (e == cudaSuccess)
    e = cudaStreamCreateWithPriority(&nc->stream, cudaStreamNonBlocking, greatest);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    nc->stream = NULL;
    dt_error_set(DT_ERR_CONFIG, "NCCL cannot start on rank %d: no usable CUDA device: %s (%s)",
                 nc->rank, cudaGetErrorString(e), cudaGetErrorName(e));
    return false;
  }
  return true;
}

dt_comm_nccl *dt_comm_nccl_create(dt_comm *comm) {
  dt_comm_nccl *nc = dt_xcalloc(1, sizeof *nc);
  nc->rank = dt_comm_rank(comm);
  nc->size = dt_comm_size(comm);

  /* Every rank learns whether every rank is ready before any enters ncclCommInitRank, which
   * waits for all of them: a rank that cannot start must not leave the others there. */
  double failed = comm_nccl_prepare(nc) ? 0 : 1;
  ncclUniqueId id = {{0}};
  if (nc->rank == 0 && failed == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      dt_error_set(DT_ERR_CONFIG, "NCCL cannot make its unique id: %s (%d): %s",
                   ncclGetErrorString(r), (int)r, ncclGetLastError(NULL));
      failed = 1;
    }
  }
  const bool failed_here = failed > 0; /* its own message is set: it stays the one reported */
  dt_comm_allreduce_sum_f64(comm, &failed, 1);
  if (failed > 0) {
    if (!failed_here)
      dt_error_set(DT_ERR_CONFIG, "NCCL cannot start: %.0f of %d ranks have no usable CUDA "
                   "device or NCCL", failed, nc->size);
    if (nc->stream) (void)cudaStreamDestroy(nc->stream);
    free(nc);
    return NULL;
  }
  dt_comm_broadcast(comm, &id, sizeof id, 0);

  ncclResult_t r = ncclCommInitRank(&nc->comm, nc->size, id, nc->rank);
  if (r != ncclSuccess) {
    char msg[768];
    snprintf(msg, sizeof msg, "NCCL cannot start on GPU %d (rank %d of %d): %s (%d): %s",
             nc->device, nc->rank, nc->size, ncclGetErrorString(r), (int)r,
             ncclGetLastError(NULL));
    nc->comm = NULL;
    /* Alone, nobody waits: an input-tier error. With peers, some may still wait inside the
     * initialisation; only an abort of every rank releases them. */
    if (nc->size > 1) DT_FATAL("%s", msg);
    dt_error_set(DT_ERR_CONFIG, "%s", msg);
    (void)cudaStreamDestroy(nc->stream);
    free(nc);
    return NULL;
  }
  DT_COMM_CUDA_CHECK(nc, cudaEventCreateWithFlags(&nc->ready, cudaEventDisableTiming));
  DT_COMM_CUDA_CHECK(nc, cudaEventCreateWithFlags(&nc->done, cudaEventDisableTiming));
  DT_COMM_CUDA_CHECK(nc, cudaEventCreateWithFlags(&nc->settled, cudaEventDisableTiming));
  nc->timeout_s = 600;
  return nc;
}

void dt_comm_nccl_destroy(dt_comm_nccl *nc) {
  if (!nc) return;
  comm_nccl_wait_on(nc, nc->stream, nc->done, "the last NCCL all-reduces before shutdown");
  /* Finalize first so that an error in flushing is reported rather than lost in Destroy. */
  DT_COMM_NCCL_CHECK(nc, ncclCommFinalize(nc->comm));
  ncclComm_t comm = nc->comm;
  nc->comm = NULL; /* no abort of a communicator being destroyed */
  DT_COMM_NCCL_CHECK(nc, ncclCommDestroy(comm));
  DT_COMM_CUDA_CHECK(nc, cudaEventDestroy(nc->ready));
  DT_COMM_CUDA_CHECK(nc, cudaEventDestroy(nc->done));
  DT_COMM_CUDA_CHECK(nc, cudaEventDestroy(nc->settled));
  DT_COMM_CUDA_CHECK(nc, cudaStreamDestroy(nc->stream));
  free(nc);
}

/* Enqueue one all-reduce on the comm stream, after the compute stream's work so far. */
static void comm_nccl_allreduce(dt_comm_nccl *nc, void *dev, size_t count, ncclDataType_t type,
                                size_t elem, ncclRedOp_t op, cudaStream_t compute) {
  DT_COMM_CUDA_CHECK(nc, cudaEventRecord(nc->ready, compute));
  DT_COMM_CUDA_CHECK(nc, cudaStreamWaitEvent(nc->stream, nc->ready, 0));
  const double t0 = dt_now();
  DT_COMM_NCCL_CHECK(nc, ncclAllReduce(dev, dev, count, type, op, nc->comm, nc->stream));
  nc->host_seconds += dt_now() - t0;
  nc->pending = true;
  nc->pending_count++;
  nc->pending_bytes += count * elem;
  nc->allreduces++;
  nc->bytes += count * elem;
}

void dt_comm_nccl_allreduce_async(dt_comm_nccl *nc, float *dev, size_t count,
                                  void *compute_stream) {
  if (count == 0) return;
  comm_nccl_allreduce(nc, dev, count, ncclFloat32, sizeof(float), ncclSum, compute_stream);
}

void dt_comm_nccl_allreduce_max_i32_async(dt_comm_nccl *nc, int32_t *dev, size_t count,
                                          void *compute_stream) {
  if (count == 0) return;
  comm_nccl_allreduce(nc, dev, count, ncclInt32, sizeof(int32_t), ncclMax, compute_stream);
}

/* Network failures surface only through the communicator's asynchronous error (the calls
 * return before the transfer): a cheap host call, checked at every join and wait. */
static void comm_nccl_check_async(dt_comm_nccl *nc) {
  ncclResult_t async = ncclSuccess;
  DT_COMM_NCCL_CHECK(nc, ncclCommGetAsyncError(nc->comm, &async));
  if (async != ncclSuccess && async != ncclInProgress) {
    char msg[768];
    snprintf(msg, sizeof msg, "NCCL all-reduce failed on rank %d (GPU %d): %s (%d): %s",
             nc->rank, nc->device, ncclGetErrorString(async), (int)async,
             comm_nccl_last_error(nc));
    comm_nccl_fail(nc, __FILE__, __LINE__, msg);
  }
}

void dt_comm_nccl_join(dt_comm_nccl *nc, void *compute_stream) {
  if (nc->pending) {
    /* The device orders the work; the host goes on (dt_comm_nccl_wait bounds its wait). */
    DT_COMM_CUDA_CHECK(nc, cudaEventRecord(nc->done, nc->stream));
    DT_COMM_CUDA_CHECK(nc, cudaStreamWaitEvent((cudaStream_t)compute_stream, nc->done, 0));
    nc->joined_count += nc->pending_count;
    nc->joined_bytes += nc->pending_bytes;
    nc->pending = false;
    nc->pending_count = nc->pending_bytes = 0;
  }
  comm_nccl_check_async(nc);
}

void dt_comm_nccl_wait(dt_comm_nccl *nc, void *compute_stream, const char *what) {
  char collective[256];
  snprintf(collective, sizeof collective, "%s (%zu NCCL all-reduce%s, %.2f MiB)", what,
           nc->joined_count, nc->joined_count == 1 ? "" : "s",
           (double)nc->joined_bytes / 1048576.0);
  comm_nccl_wait_on(nc, (cudaStream_t)compute_stream, nc->settled, collective);
  nc->joined_count = nc->joined_bytes = 0;
  comm_nccl_check_async(nc);
}

double dt_comm_nccl_host_seconds(const dt_comm_nccl *nc) { return nc->host_seconds; }
size_t dt_comm_nccl_allreduce_count(const dt_comm_nccl *nc) { return nc->allreduces; }
size_t dt_comm_nccl_allreduce_bytes(const dt_comm_nccl *nc) { return nc->bytes; }
