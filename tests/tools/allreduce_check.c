/* allreduce_check.c: closed-form checks of comm/ under mpirun (any number of ranks, also a
 * singleton). Rank r contributes r + 1, so every element of a sum must be n(n+1)/2 exactly;
 * a second pattern (r + 1) * (1 + i % 251) catches elements that land at the wrong offset
 * (bucket boundaries, odd sizes). Also the float64 sum, broadcast from every root, and
 * `--fatal-rank R`: rank R dies through DT_FATAL while the others wait in a barrier, to show
 * that a fatal error on one rank ends the whole job. Exits 1 on any mismatch, naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "common.h"

static int g_failures;

static void report(int rank, const char *what, size_t count, size_t bucket, size_t index,
                   double got, double want) {
  fprintf(stderr,
          "allreduce_check (rank %d): %s, count %zu, bucket %zu: element %zu is %.17g, expected "
          "%.17g\n",
          rank, what, count, bucket, index, got, want);
  g_failures++;
}

/* Float sum of `count` elements in buckets of `bucket` floats, both patterns. */
static void check_sum_f32(dt_comm *comm, size_t count, size_t bucket) {
  const int rank = dt_comm_rank(comm), n = dt_comm_size(comm);
  const double total = (double)n * (n + 1) / 2;
  dt_comm_set_bucket(comm, bucket);
  float *buf = dt_xmalloc(count * sizeof(float));
  for (int pattern = 0; pattern < 2; pattern++) {
    for (size_t i = 0; i < count; i++)
      buf[i] = (float)(rank + 1) * (pattern ? (float)(1 + i % 251) : 1.0f);
    dt_comm_allreduce_sum(comm, buf, count);
    for (size_t i = 0; i < count; i++) {
      double want = total * (pattern ? (double)(1 + i % 251) : 1.0);
      if ((double)buf[i] != want) {
        report(rank, pattern ? "f32 sum (r+1)(1+i%251)" : "f32 sum r+1", count, bucket, i,
               buf[i], want);
        break;
      }
    }
  }
  free(buf);
}

static void check_sum_f64(dt_comm *comm, size_t count) {
  const int rank = dt_comm_rank(comm), n = dt_comm_size(comm);
  const double total = (double)n * (n + 1) / 2;
  double *buf = dt_xmalloc(count * sizeof(double));
  /* 2^-30 steps are exact in double but not in float: a float path would round them away. */
  for (size_t i = 0; i < count; i++) buf[i] = (rank + 1) * (1.0 + (double)(i % 7) * 0x1p-30);
  dt_comm_allreduce_sum_f64(comm, buf, count);
  for (size_t i = 0; i < count; i++) {
    double want = total * (1.0 + (double)(i % 7) * 0x1p-30);
    if (buf[i] != want) {
      report(rank, "f64 sum", count, 0, i, buf[i], want);
      break;
    }
  }
  free(buf);
}

/* Every rank but root starts from garbage; afterwards all hold root's bytes. */
static void check_broadcast(dt_comm *comm, size_t bytes, int root) {
  const int rank = dt_comm_rank(comm);
  unsigned char *buf = dt_xmalloc(bytes ? bytes : 1);
  for (size_t i = 0; i < bytes; i++)
    buf[i] = rank == root ? (unsigned char)((i * 131 + (size_t)root * 7) & 0xff) : 0xa5;
  dt_comm_broadcast(comm, buf, bytes, root);
  for (size_t i = 0; i < bytes; i++) {
    unsigned char want = (unsigned char)((i * 131 + (size_t)root * 7) & 0xff);
    if (buf[i] != want) {
      char what[64];
      snprintf(what, sizeof what, "broadcast from root %d", root);
      report(rank, what, bytes, 0, i, buf[i], want);
      break;
    }
  }
  free(buf);
}

/* Rank r sends `bytes` bytes of value (r * 37 + i) mod 251; all get every rank's, in order. */
static void check_allgather(dt_comm *comm, size_t bytes) {
  const int rank = dt_comm_rank(comm), n = dt_comm_size(comm);
  unsigned char *mine = dt_xmalloc(bytes ? bytes : 1);
  unsigned char *all = dt_xmalloc(bytes * (size_t)n + 1);
  for (size_t i = 0; i < bytes; i++) mine[i] = (unsigned char)(((size_t)rank * 37 + i) % 251);
  memset(all, 0xa5, bytes * (size_t)n + 1);
  dt_comm_allgather(comm, mine, all, bytes);
  for (int r = 0; r < n; r++)
    for (size_t i = 0; i < bytes; i++) {
      unsigned char want = (unsigned char)(((size_t)r * 37 + i) % 251);
      if (all[(size_t)r * bytes + i] != want) {
        char what[64];
        snprintf(what, sizeof what, "allgather, block of rank %d", r);
        report(rank, what, bytes, 0, i, all[(size_t)r * bytes + i], want);
        r = n;
        break;
      }
    }
  free(mine);
  free(all);
}

int main(int argc, char **argv) {
  dt_comm *comm = dt_comm_init(&argc, &argv);
  const int rank = dt_comm_rank(comm), n = dt_comm_size(comm);
  if (argc == 3 && strcmp(argv[1], "--fatal-rank") == 0) {
    if (rank == atoi(argv[2])) DT_FATAL("injected fatal error on rank %d", rank);
    /* The others wait in a collective that the dead rank never joins. */
    dt_comm_barrier(comm);
    fprintf(stderr, "allreduce_check (rank %d): barrier passed although a rank died\n", rank);
    dt_comm_finalize(comm);
    return 1;
  }
  if (argc != 1) {
    if (rank == 0) fprintf(stderr, "usage: allreduce_check [--fatal-rank R]\n");
    dt_comm_finalize(comm);
    return 2;
  }

  const size_t default_bucket = (size_t)1 << 20;
  const size_t sizes[] = {1, 7, 1000003};
  for (size_t k = 0; k < DT_ARRAY_LEN(sizes); k++) check_sum_f32(comm, sizes[k], default_bucket);
  /* Many small buckets, the last one partial: 100003 = 97 x 1031 + 96. */
  check_sum_f32(comm, 100003, 1031);
  check_sum_f32(comm, 7, 3);
  check_sum_f32(comm, 5, 1);
  check_sum_f32(comm, 0, 3);
  /* A size that is an exact multiple of the bucket. */
  check_sum_f32(comm, 4096, 1024);
  dt_comm_set_bucket(comm, default_bucket);
  double seconds = dt_comm_allreduce_seconds(comm);
  if (n > 1 && !(seconds > 0)) {
    fprintf(stderr, "allreduce_check (rank %d): dt_comm_allreduce_seconds is %g after reductions\n",
            rank, seconds);
    g_failures++;
  }

  check_sum_f64(comm, 1);
  check_sum_f64(comm, 5);
  check_sum_f64(comm, 65537);

  for (int root = 0; root < n; root++) {
    check_broadcast(comm, 1, root);
    check_broadcast(comm, 1001, root);
    check_broadcast(comm, (size_t)3 << 20, root);
  }
  check_broadcast(comm, 0, 0);
  check_allgather(comm, 1);
  check_allgather(comm, 1000);
  check_allgather(comm, 0);

  /* Every rank's verdict, so the job's status does not depend on which rank mpirun reports. */
  double failures = g_failures;
  dt_comm_allreduce_sum_f64(comm, &failures, 1);
  if (rank == 0)
    printf("allreduce_check: %d rank(s), %s (%.0f failure(s) over all ranks)\n", n,
           failures == 0 ? "all sums and broadcasts exact" : "MISMATCH", failures);
  dt_comm_finalize(comm);
  return failures == 0 ? 0 : 1;
}
