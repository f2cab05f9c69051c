/* comm.h: everything that talks between processes (docs/architecture.md "Comm"). No other directory
 * includes mpi.h or nccl.h. comm_mpi.c implements it over MPI (a singleton start without mpirun
 * works); comm_single.c is the single-process version for -DDT_MPI=OFF builds. The device
 * collectives at the end (NCCL on GPU memory) are built on either. */
#ifndef DT_COMM_H
#define DT_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct dt_comm dt_comm;

/* Start the process group (a singleton without mpirun). Never fails: errors are fatal. */
dt_comm *dt_comm_init(int *argc, char ***argv);
void dt_comm_finalize(dt_comm *comm);
int dt_comm_rank(const dt_comm *comm);
int dt_comm_size(const dt_comm *comm);
/* Rank among the processes of this node (from a shared-memory split), and their count. */
int dt_comm_local_rank(const dt_comm *comm);
int dt_comm_local_size(const dt_comm *comm);
/* Gathers bytes from every rank of this node into all (local size x bytes, in local-rank
 * order); collective over the node's ranks. */
void dt_comm_local_allgather(dt_comm *comm, const void *mine, void *all, size_t bytes);
/* In-place sum of a float buffer over every rank, in buckets of at most
 * dt_comm_set_bucket() floats (default 1 Mi floats = 4 MiB). */
void dt_comm_allreduce_sum(dt_comm *comm, float *buf, size_t count);
void dt_comm_set_bucket(dt_comm *comm, size_t floats);
/* Seconds spent in dt_comm_allreduce_sum so far. */
double dt_comm_allreduce_seconds(const dt_comm *comm);
/* In-place sum of doubles (loss and accuracy sums). */
void dt_comm_allreduce_sum_f64(dt_comm *comm, double *buf, size_t count);
/* In-place maximum of int32 flags over every rank (a step's non-finite flag). */
void dt_comm_allreduce_max_i32(dt_comm *comm, int32_t *buf, size_t count);
void dt_comm_broadcast(dt_comm *comm, void *buf, size_t bytes, int root);
/* Every rank's `bytes` bytes at send, in rank order, into recv (size x bytes) on every rank:
 * how ranks compare what they were started with (configuration, dataset) before anything
 * depends on it. bytes must be the same on every rank. */
void dt_comm_allgather(dt_comm *comm, const void *send, void *recv, size_t bytes);
void dt_comm_barrier(dt_comm *comm);

/* ---- device collectives (NCCL), in comm_nccl.c; comm_nccl_none.c in builds without CUDA ----
 *
 * Gradients on the GPU are summed in place on device memory, bucket by bucket, each bucket on
 * the comm's own CUDA stream as soon as backward has produced it, so that the all-reduces
 * overlap the rest of backward:
 *
 *   for each bucket, once its gradients are enqueued on the compute stream:
 *     dt_comm_nccl_allreduce_async(nc, grad + off, n, stream);
 *   dt_comm_nccl_join(nc, stream);   (then the optimizer step, on the compute stream)
 *   ...
 *   dt_comm_nccl_wait(nc, stream, what);   (the step's one wait; then read results back)
 *
 * Neither allreduce_async nor the join blocks the host: the join only makes the compute
 * stream wait for the sums on the device. The host blocks once, in dt_comm_nccl_wait, which
 * is bounded: a dead peer leaves NCCL's kernels, and so the compute stream behind them,
 * unfinished forever, and a plain synchronize would hang. Streams are passed as void * (a
 * cudaStream_t: the backend's native_stream) so that no file outside comm/ and src/cuda/ sees
 * a CUDA header. NCCL and CUDA errors after creation are fatal (DT_FATAL: every rank aborts). */
typedef struct dt_comm_nccl dt_comm_nccl;

/* One NCCL communicator over every rank of comm, on the current CUDA device: create the CUDA
 * backend first (it chooses the device and calls cudaSetDevice). Collective over comm: rank 0
 * creates the NCCL unique id and dt_comm_broadcast sends it. With one rank it still runs
 * through NCCL (the code path stays the same).
 * Returns NULL with DT_ERR_CONFIG set (dt_error_set) on every rank when this build has no
 * NCCL or CUDA, when some rank has no usable current device, or when the NCCL unique id
 * cannot be made. A failure of the NCCL initialisation itself returns NULL likewise with one
 * rank; with several it is fatal, since the other ranks may already wait inside it. */
dt_comm_nccl *dt_comm_nccl_create(dt_comm *comm);
/* Waits for the all-reduces in flight, then frees the communicator, its stream and events;
 * call it before destroying the backend. NULL is ignored. */
void dt_comm_nccl_destroy(dt_comm_nccl *nc);
/* In-place fp32 sum over every rank of count floats of device memory at dev, ordered after
 * all work enqueued so far on compute_stream (an event recorded there, waited for by the
 * comm's stream) and running on the comm's stream. Every rank must make the same calls with
 * the same counts in the same order. dev must not be written, and is not yet summed, until
 * dt_comm_nccl_join. count 0 does nothing. */
void dt_comm_nccl_allreduce_async(dt_comm_nccl *nc, float *dev, size_t count,
                                  void *compute_stream);
/* In-place maximum over every rank of count int32 of device memory, ordered like
 * dt_comm_nccl_allreduce_async (a step's non-finite flag: every rank then skips or applies the
 * update alike, on the device). */
void dt_comm_nccl_allreduce_max_i32_async(dt_comm_nccl *nc, int32_t *dev, size_t count,
                                          void *compute_stream);
/* Make compute_stream wait, on the device, for every all-reduce enqueued so far: work enqueued
 * there afterwards sees the results. The host does not wait. */
void dt_comm_nccl_join(dt_comm_nccl *nc, void *compute_stream);
/* Block the host until everything enqueued on compute_stream so far has finished (with a
 * join before, the all-reduces too). The host waits in a loop that polls NCCL's asynchronous
 * error and gives up after the timeout (dt_comm_nccl_set_timeout): an error or a timeout (a
 * dead or hung peer) aborts the communicator and is fatal, with a message naming the rank and
 * `what` (the collectives waited for), instead of hanging the job. */
void dt_comm_nccl_wait(dt_comm_nccl *nc, void *compute_stream, const char *what);
/* The longest wait of dt_comm_nccl_wait or of dt_comm_nccl_destroy, in seconds (config
 * comm.timeout_s; 600 from creation; <= 0 waits without limit). */
void dt_comm_nccl_set_timeout(dt_comm_nccl *nc, double seconds);
/* For --bench: seconds the host spent inside NCCL calls of dt_comm_nccl_allreduce_async
 * (enqueueing; the transfers themselves overlap and are not counted), the number of
 * all-reduces made (count > 0) and the bytes they summed per rank. */
double dt_comm_nccl_host_seconds(const dt_comm_nccl *nc);
size_t dt_comm_nccl_allreduce_count(const dt_comm_nccl *nc);
size_t dt_comm_nccl_allreduce_bytes(const dt_comm_nccl *nc);

/* Usable before init and from the fatal-error path: the world rank (0 if unknown), and an
 * abort that takes every rank down. */
int dt_comm_world_rank(void);
_Noreturn void dt_comm_abort(int code);

#endif
