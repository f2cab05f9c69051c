/* comm_single.c: the single-process comm, for builds without MPI and for one-rank runs. */
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common.h"

struct dt_comm { int unused; };
static struct dt_comm g_single;

dt_comm *dt_comm_init(int *argc, char ***argv) {
  dt_fatal_set_hooks(&(dt_fatal_hooks){dt_comm_world_rank, dt_comm_abort});
  (void)argc;
  (void)argv;
  return &g_single;
}
void dt_comm_finalize(dt_comm *comm) { (void)comm; }
int dt_comm_rank(const dt_comm *comm) { (void)comm; return 0; }
int dt_comm_size(const dt_comm *comm) { (void)comm; return 1; }
int dt_comm_local_rank(const dt_comm *comm) { (void)comm; return 0; }
int dt_comm_local_size(const dt_comm *comm) { (void)comm; return 1; }
void dt_comm_local_allgather(dt_comm *comm, const void *mine, void *all, size_t bytes) {
  (void)comm;
  memcpy(all, mine, bytes);
}
void dt_comm_allreduce_sum(dt_comm *comm, float *buf, size_t count) { (void)comm; (void)buf; (void)count; }
void dt_comm_set_bucket(dt_comm *comm, size_t floats) { (void)comm; (void)floats; }
double dt_comm_allreduce_seconds(const dt_comm *comm) { (void)comm; return 0; }
void dt_comm_allreduce_sum_f64(dt_comm *comm, double *buf, size_t count) { (void)comm; (void)buf; (void)count; }
void dt_comm_allreduce_max_i32(dt_comm *comm, int32_t *buf, size_t count) { (void)comm; (void)buf; (void)count; }
void dt_comm_broadcast(dt_comm *comm, void *buf, size_t bytes, int root) {
  (void)comm; (void)buf; (void)bytes; (void)root;
}
void dt_comm_allgather(dt_comm *comm, const void *send, void *recv, size_t bytes) {
  (void)comm;
  memcpy(recv, send, bytes);
}
void dt_comm_barrier(dt_comm *comm) { (void)comm; }
int dt_comm_world_rank(void) { return 0; }
_Noreturn void dt_comm_abort(int code) { exit(code); }
