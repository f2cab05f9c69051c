/* comm.h: everything that talks between processes (DESIGN "Comm"). No other directory
 * includes mpi.h or nccl.h. comm_mpi.c implements it over MPI (a singleton start without
 * mpirun works); comm_single.c is the single-process version for -DDT_MPI=OFF builds. */
#ifndef DT_COMM_H
#define DT_COMM_H

#include <stddef.h>

typedef struct dt_comm dt_comm;

/* Start the process group (a singleton without mpirun). Never fails: errors are fatal. */
dt_comm *dt_comm_init(int *argc, char ***argv);
void dt_comm_finalize(dt_comm *comm);
int dt_comm_rank(const dt_comm *comm);
int dt_comm_size(const dt_comm *comm);
/* Rank among the processes of this node (from a shared-memory split), and their count. */
int dt_comm_local_rank(const dt_comm *comm);
int dt_comm_local_size(const dt_comm *comm);
/* In-place sum of a float buffer over every rank, in buckets of at most
 * dt_comm_set_bucket() floats (default 1 Mi floats = 4 MiB). */
void dt_comm_allreduce_sum(dt_comm *comm, float *buf, size_t count);
void dt_comm_set_bucket(dt_comm *comm, size_t floats);
/* Seconds spent in dt_comm_allreduce_sum so far. */
double dt_comm_allreduce_seconds(const dt_comm *comm);
/* In-place sum of doubles (loss and accuracy sums). */
void dt_comm_allreduce_sum_f64(dt_comm *comm, double *buf, size_t count);
void dt_comm_broadcast(dt_comm *comm, void *buf, size_t bytes, int root);
void dt_comm_barrier(dt_comm *comm);

/* Usable before init and from the fatal-error path: the world rank (0 if unknown), and an
 * abort that takes every rank down. */
int dt_comm_world_rank(void);
_Noreturn void dt_comm_abort(int code);

#endif
