/* comm_mpi.c: the process group over MPI. Ranks on one node are found with a shared-memory
 * split; gradients are summed with in-place MPI_Allreduce over buckets of the flat buffer.
 * MPI errors are fatal (MPI_ERRORS_ARE_FATAL), so no rank is left waiting in a collective.
 * A process that no launcher started (no mpirun, srun or PMI environment) runs as a group of
 * one without initialising MPI: Open MPI's singleton start forks a daemon, which costs
 * start-up time for every --help or --dry-run and fails where no daemon may run. */
#include <limits.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common.h"

struct dt_comm {
  bool mpi; /* MPI initialised (started by a launcher) */
  MPI_Comm world, local;
  int rank, size, local_rank, local_size;
  size_t bucket;
  double allreduce_seconds;
};

static struct dt_comm g_comm;
static int g_world_rank;

/* Variables that Open MPI's mpirun, Slurm's srun (PMI/PMIx) and MPICH-style launchers set. */
static bool launched(void) {
  static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                               "MPI_LOCALNRANKS", "DTRAIN_FORCE_MPI"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
    if (getenv(vars[i])) return true;
  return false;
}

dt_comm *dt_comm_init(int *argc, char ***argv) {
  dt_fatal_set_hooks(&(dt_fatal_hooks){dt_comm_world_rank, dt_comm_abort});
  dt_comm *c = &g_comm;
  c->bucket = (size_t)1 << 20;
  int initialized = 0, provided;
  MPI_Initialized(&initialized);
  if (!initialized && !launched()) {
    c->mpi = false;
    c->rank = c->local_rank = 0;
    c->size = c->local_size = 1;
    return c;
  }
  c->mpi = true;
  if (!initialized) MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  c->world = MPI_COMM_WORLD;
  MPI_Comm_set_errhandler(c->world, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(c->world, &c->rank);
  MPI_Comm_size(c->world, &c->size);
  MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &c->local);
  MPI_Comm_rank(c->local, &c->local_rank);
  MPI_Comm_size(c->local, &c->local_size);
  g_world_rank = c->rank;
  return c;
}

void dt_comm_finalize(dt_comm *comm) {
  if (!comm->mpi) return;
  MPI_Comm_free(&comm->local);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int dt_comm_rank(const dt_comm *comm) { return comm->rank; }
int dt_comm_size(const dt_comm *comm) { return comm->size; }
int dt_comm_local_rank(const dt_comm *comm) { return comm->local_rank; }
int dt_comm_local_size(const dt_comm *comm) { return comm->local_size; }
void dt_comm_local_allgather(dt_comm *comm, const void *mine, void *all, size_t bytes) {
  if (!comm->mpi) {
    memcpy(all, mine, bytes);
    return;
  }
  DT_CHECK(bytes <= (size_t)INT_MAX);
  MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, comm->local);
}
void dt_comm_set_bucket(dt_comm *comm, size_t floats) {
  /* MPI counts are ints. */
  comm->bucket = floats == 0 ? 1 : floats > (size_t)INT_MAX ? (size_t)INT_MAX : floats;
}
double dt_comm_allreduce_seconds(const dt_comm *comm) { return comm->allreduce_seconds; }

void dt_comm_allreduce_sum(dt_comm *comm, float *buf, size_t count) {
  if (comm->size == 1) return;
  double t0 = MPI_Wtime();
  for (size_t off = 0; off < count; off += comm->bucket) {
    size_t n = count - off < comm->bucket ? count - off : comm->bucket;
    MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)n, MPI_FLOAT, MPI_SUM, comm->world);
  }
  comm->allreduce_seconds += MPI_Wtime() - t0;
}

void dt_comm_allreduce_sum_f64(dt_comm *comm, double *buf, size_t count) {
  if (comm->size == 1) return;
  MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_DOUBLE, MPI_SUM, comm->world);
}

void dt_comm_allreduce_max_i32(dt_comm *comm, int32_t *buf, size_t count) {
  if (comm->size == 1) return;
  DT_CHECK(count <= (size_t)INT_MAX);
  MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_INT32_T, MPI_MAX, comm->world);
}

void dt_comm_broadcast(dt_comm *comm, void *buf, size_t bytes, int root) {
  if (comm->size == 1) return;
  const size_t chunk = (size_t)1 << 30;
  for (size_t off = 0; off < bytes; off += chunk) {
    size_t n = bytes - off < chunk ? bytes - off : chunk;
    MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, comm->world);
  }
}

void dt_comm_allgather(dt_comm *comm, const void *send, void *recv, size_t bytes) {
  if (comm->size == 1) {
    memcpy(recv, send, bytes);
    return;
  }
  DT_CHECK(bytes <= (size_t)INT_MAX);
  MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, comm->world);
}

void dt_comm_barrier(dt_comm *comm) {
  if (comm->mpi) MPI_Barrier(comm->world);
}

int dt_comm_world_rank(void) { return g_world_rank; }

_Noreturn void dt_comm_abort(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  exit(code);
}
