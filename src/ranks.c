/* ranks.c: rank agreement (ranks.h): the verdicts every rank shares. */
#include "ranks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "loader_options.h"

dt_status dt_ranks_agree(dt_comm *comm, dt_status st) {
  double v = st;
  dt_comm_allreduce_sum_f64(comm, &v, 1);
  return v == 0 ? DT_OK : (st != DT_OK ? st : DT_ERR_IO);
}

/* "rank 1" or "ranks 1, 3, 4" (at most 8 listed) of the ranks whose flag is set. */
static void list_ranks(const bool *differs, int world, char *buf, size_t cap) {
  int n = 0;
  for (int r = 0; r < world; r++) n += differs[r];
  size_t len = (size_t)snprintf(buf, cap, "rank%s", n > 1 ? "s" : "");
  int shown = 0;
  for (int r = 0; r < world && len < cap; r++) {
    if (!differs[r]) continue;
    if (shown++ == 8) {
      snprintf(buf + len, cap - len, " and %d more", n - 8);
      break;
    }
    len += (size_t)snprintf(buf + len, cap - len, "%s %d", shown > 1 ? "," : "", r);
  }
}

/* A rank with another epoch count would wait forever in a collective, another batch size or
 * depth would make the reductions disagree in size, another seed or learning rate would train
 * silently wrong. On a difference the ranks exchange the first differing key's values. */
dt_status dt_ranks_same_config(dt_comm *comm, const dt_config *cfg) {
  const int world = dt_comm_size(comm);
  if (world == 1) return DT_OK;
  const size_t nk = dt_config_key_count();
  uint64_t *mine = dt_xmalloc(nk * sizeof *mine),
           *all = dt_xmalloc((size_t)world * nk * sizeof *all);
  dt_config_digest(cfg, mine);
  dt_comm_allgather(comm, mine, all, nk * sizeof *mine);
  long key = -1;
  for (int r = 1; r < world; r++) {
    long k = dt_config_digest_diff(all, all + (size_t)r * nk);
    if (k >= 0 && (key < 0 || k < key)) key = k;
  }
  dt_status st = DT_OK;
  if (key >= 0) {
    enum { VAL = DT_STR_MAX + 64 };
    char name[160], *values = dt_xmalloc((size_t)world * VAL), value[VAL];
    dt_config_key_describe(cfg, (size_t)key, name, sizeof name, value, sizeof value);
    dt_comm_allgather(comm, value, values, VAL);
    /* The first rank whose value differs from rank 0's, and every rank sharing it. */
    int first = -1;
    bool *same_as_first = dt_xcalloc((size_t)world, sizeof(bool));
    for (int r = 1; r < world; r++) {
      const char *v = values + (size_t)r * VAL;
      if (first < 0 && strcmp(v, values) != 0) first = r;
      if (first >= 0 && strcmp(v, values + (size_t)first * VAL) == 0) same_as_first[r] = true;
    }
    /* Digests are of these very texts: some rank's text differs. */
    DT_CHECK(first > 0);
    char ranks[160];
    list_ranks(same_as_first, world, ranks, sizeof ranks);
    st =
        dt_error_set(DT_ERR_CONFIG,
                     "the ranks run different configurations: %s = %s on rank 0 but %s on %s; "
                     "start every rank with the same config file and --set options",
                     name, *values ? values : "(empty)",
                     values[(size_t)first * VAL] ? values + (size_t)first * VAL : "(empty)", ranks);
    free(same_as_first);
    free(values);
  }
  free(mine);
  free(all);
  return st;
}

/* What a rank loaded (after data.train_limit and data.test_limit): sizes and the CRC-32 of
 * the images and labels of each split. */
enum { DS_DIGEST = 10 };
static void dataset_digest(const dt_dataset *ds, uint64_t *d) {
  const dt_split *sp[2] = {&ds->train, &ds->test};
  d[0] = (uint64_t)ds->train.count;
  d[1] = (uint64_t)ds->test.count;
  d[2] = (uint64_t)ds->train.channels;
  d[3] = (uint64_t)ds->train.height;
  d[4] = (uint64_t)ds->train.width;
  d[5] = (uint64_t)ds->classes;
  for (int s = 0; s < 2; s++) {
    const size_t n = (size_t)sp[s]->count,
                 image = (size_t)sp[s]->channels * sp[s]->height * sp[s]->width;
    d[6 + 2 * s] = crc32_z(crc32_z(0L, Z_NULL, 0), sp[s]->images, n * image);
    d[7 + 2 * s] = crc32_z(crc32_z(0L, Z_NULL, 0), sp[s]->labels, n);
  }
}

/* A relative or node-local data.dir can name other files on each node. */
bool dt_ranks_same_dataset(dt_comm *comm, const dt_config *cfg, const dt_dataset *ds,
                           dt_status *st) {
  const int world = dt_comm_size(comm), rank = dt_comm_rank(comm);
  if (world == 1) return true;
  uint64_t mine[DS_DIGEST], *all = dt_xmalloc((size_t)world * sizeof mine);
  dataset_digest(ds, mine);
  dt_comm_allgather(comm, mine, all, sizeof mine);
  static const char *const what[DS_DIGEST] = {
      "training images (count)", "test images (count)", "channels", "height", "width", "classes",
      "training images (CRC-32)", "training labels (CRC-32)", "test images (CRC-32)",
      "test labels (CRC-32)"};
  int first = -1, field = -1;
  bool *differs = dt_xcalloc((size_t)world, sizeof(bool));
  for (int r = 1; r < world; r++) {
    const uint64_t *d = all + (size_t)r * DS_DIGEST;
    for (int k = 0; k < DS_DIGEST; k++)
      if (d[k] != all[k]) {
        differs[r] = true;
        if (first < 0) first = r, field = k;
        break;
      }
  }
  if (first >= 0 && rank == 0) {
    char ranks[160];
    list_ranks(differs, world, ranks, sizeof ranks);
    const uint64_t a = all[field], b = all[(size_t)first * DS_DIGEST + field];
    char va[32], vb[32];
    snprintf(va, sizeof va, field >= 6 ? "%08" PRIx64 : "%" PRIu64, a);
    snprintf(vb, sizeof vb, field >= 6 ? "%08" PRIx64 : "%" PRIu64, b);
    *st =
        dt_error_set(DT_ERR_DATA,
                     "the ranks loaded different datasets: %s %s on rank 0, %s on rank %d "
                     "(%s differ%s from rank 0); %s %s must hold the same files for every rank",
                     what[field], va, vb, first, ranks, strchr(ranks, ',') ? "" : "s",
                     dt_dataset_is_file(cfg) ? "data.path" : "data.dir", dt_dataset_location(cfg));
  }
  free(differs);
  free(all);
  return first < 0;
}
