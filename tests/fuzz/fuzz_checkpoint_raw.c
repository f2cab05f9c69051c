/* fuzz_checkpoint.c: libFuzzer harness of checkpoint loading (src/io/checkpoint.c).
 * The input is an HDF5 file, loaded as --resume loads one: weights, running statistics, one
 * optimizer state ("momentum") and the metadata, into a small parameter table (a conv, a
 * batch norm and a linear layer). A refused file must leave a message and the outputs
 * untouched, and no load may leave an HDF5 object open (H5Fget_obj_count). Leaks inside a
 * failed H5Fopen are HDF5's own (tests/sanitizers/lsan.supp).
 *
 * Seeds: with DT_FUZZ_WRITE_SEEDS=DIR the harness writes checkpoints of this table with
 * dt_checkpoint_save into DIR and exits (tests/fuzz/run.sh --seeds regenerates the corpus). */
#define _GNU_SOURCE
#include <hdf5.h>

#include "fuzz_ckpt_table.h"
#include "fuzz_util.h"
#include "io/checkpoint.h"


static dt_params g_ps;

/* Seed checkpoints: with and without optimizer state, different metadata. */
static void write_seeds(const char *dir) {
  float *w = fuzz_filled(g_ps.n_weights, 0), *b = fuzz_filled(g_ps.n_buffers, 1), *m = fuzz_filled(g_ps.n_weights, 0);
  for (size_t i = 0; i < g_ps.n_weights; i++) {
    w[i] = (float)((int)(i * 37 % 101) - 50) / 64.0f;
    m[i] = (float)((int)(i * 13 % 17) - 8) / 1024.0f;
  }
  dt_optim_state opt = {.names = {"momentum"}, .arrays = {m}, .n_states = 1};
  dt_checkpoint_meta meta = {.epoch = 1, .step = 12, .step_in_epoch = 2, .optimizer_steps = 12,
                             .world_size = 2, .seed = 7, .loss_scale = 65536,
                             .loss_scale_good = 3, .model = "resnet_preact"};
  meta.config_text = "[train]\nseed = 7\nbatch_size = 32\n";
  char path[512];
  snprintf(path, sizeof path, "%s/full.h5", dir);
  if (dt_checkpoint_save(path, &g_ps, w, b, &opt, &meta) != DT_OK) goto fail;
  meta = (dt_checkpoint_meta){.model = "resnet_preact", .world_size = 1};
  meta.config_text = "";
  snprintf(path, sizeof path, "%s/fresh.h5", dir);
  if (dt_checkpoint_save(path, &g_ps, w, b, NULL, &meta) != DT_OK) goto fail;
  free(w);
  free(b);
  free(m);
  exit(0);
fail:
  fprintf(stderr, "fuzz_checkpoint: writing seeds: %s\n", dt_error_message());
  exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_ckpt_table(&g_ps); /* host arrays only: no backend, no dt_params_alloc */
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  const char *seeds = getenv("DT_FUZZ_WRITE_SEEDS");
  if (seeds) write_seeds(seeds);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[256];
  fuzz_write("ckpt.h5", data, size);
  fuzz_path(path, sizeof path, "ckpt.h5");
  fuzz_ckpt_load(path, &g_ps, NULL);
  return 0;
}
