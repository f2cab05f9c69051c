/* test_io.c: HDF5 checkpoints and metrics (src/io/). A small hand-built parameter table is saved
 * and loaded back bit-exactly (weights, batch-norm buffers, two optimizer states, meta); every
 * kind of bad file is refused with DT_ERR_DATA, a message naming the file, and untouched
 * outputs (among them values out of range, non-finite tensors, a negative running_var, links
 * in place of tensors, data that fails its checksum; format 1 files without checksums load); the checkpoints directory helpers; a SIGKILL in the middle of a save leaves the
 * previous checkpoint intact; the metrics tables are appended, readable between flushes and
 * cut back on resume; TensorBoard event files: CRC-32C against its published check values, the
 * record framing of a written file, name order and an unwritable directory (io/tfevents.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>
#include <math.h>
#include <zlib.h>

#include "fuzz/fuzz_ckpt_table.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "io/tfevents.h"
#include "testutil.h"

#define SENTINEL 7.25f

/* ---- fixtures ---- */

enum { TABLE_FULL, TABLE_SHAPE, TABLE_EXTRA, TABLE_MISSING };

/* conv (4,3,3,3), bn weight/bias (4), bn running stats (4) as buffers, fc (10,4) + (10). The
 * variants change fc.weight to (10,5), add fc2.bias, or drop fc.bias. */
static void make_table(dt_params *ps, int variant) {
  memset(ps, 0, sizeof *ps);
  int conv[4] = {4, 3, 3, 3}, c[1] = {4}, fc[2] = {10, variant == TABLE_SHAPE ? 5 : 4},
      k[1] = {10};
  dt_params_add(ps, "conv1.weight", 4, conv, 0, DT_INIT_KAIMING_NORMAL, 27, 36);
  dt_params_add(ps, "bn1.weight", 1, c, DT_PARAM_NO_DECAY, DT_INIT_ONES, 0, 0);
  dt_params_add(ps, "bn1.bias", 1, c, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 0, 0);
  dt_params_add(ps, "bn1.running_mean", 1, c, DT_PARAM_BUFFER, DT_INIT_ZEROS, 0, 0);
  dt_params_add(ps, "bn1.running_var", 1, c, DT_PARAM_BUFFER, DT_INIT_ONES, 0, 0);
  dt_params_add(ps, "fc.weight", 2, fc, 0, DT_INIT_KAIMING_NORMAL, fc[1], 10);
  if (variant != TABLE_MISSING)
    dt_params_add(ps, "fc.bias", 1, k, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 0, 0);
  if (variant == TABLE_EXTRA)
    dt_params_add(ps, "fc2.bias", 1, k, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 0, 0);
}

/* Host arrays laid out like the arenas of a table. */
typedef struct {
  float *weights, *buffers, *m1, *m2;
  dt_optim_state opt;
  dt_checkpoint_meta meta;
} host_state;

static void fill(float *x, size_t n, float v) {
  for (size_t i = 0; i < n; i++) x[i] = v;
}

/* seed 0: every float SENTINEL (a load target); otherwise random values and meta. */
static void host_init(host_state *h, const dt_params *ps, uint64_t seed) {
  memset(h, 0, sizeof *h);
  h->weights = malloc(ps->n_weights * sizeof(float));
  h->buffers = malloc(ps->n_buffers * sizeof(float));
  h->m1 = malloc(ps->n_weights * sizeof(float));
  h->m2 = malloc(ps->n_weights * sizeof(float));
  h->opt.names[0] = "momentum";
  h->opt.names[1] = "exp_avg_sq";
  h->opt.arrays[0] = h->m1;
  h->opt.arrays[1] = h->m2;
  h->opt.n_states = 2;
  if (seed == 0) {
    fill(h->weights, ps->n_weights, SENTINEL);
    fill(h->buffers, ps->n_buffers, SENTINEL);
    fill(h->m1, ps->n_weights, SENTINEL);
    fill(h->m2, ps->n_weights, SENTINEL);
    h->meta.epoch = -77;
    return;
  }
  tu_fill_uniform(h->weights, ps->n_weights, seed, -1, 1);
  tu_fill_uniform(h->buffers, ps->n_buffers, seed + 1, 0, 2);
  tu_fill_uniform(h->m1, ps->n_weights, seed + 2, -0.1f, 0.1f);
  tu_fill_uniform(h->m2, ps->n_weights, seed + 3, 0, 1e-3f);
  h->meta = (dt_checkpoint_meta){.epoch = 3,
                                 .step = 1234 + (long)seed,
                                 .step_in_epoch = 17,
                                 .optimizer_steps = 617,
                                 .world_size = 4,
                                 .seed = 42,
                                 .loss_scale = 1024,
                                 .loss_scale_good = 5,
                                 .epoch_sums = {40.5, 20, 64},
                                 .window_sums = {10.25, 5, 16},
                                 .epoch_skipped = 1,
                                 .model = "tiny_cnn"};
  h->meta.config_text = "[model]\nname = tiny_cnn\n\n[optim]\nlr = 0.1 # comment, \"quoted\"\n";
}

static void host_free(host_state *h) {
  free(h->weights);
  free(h->buffers);
  free(h->m1);
  free(h->m2);
}

static char *g_dir; /* temporary directory of this run */

static char *tmp_path(const char *name) {
  size_t n = strlen(g_dir) + strlen(name) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", g_dir, name);
  return p;
}

/* Save the full table from a random host state of `seed` to `name` under g_dir. */
static char *save_reference(const char *name, host_state *h, dt_params *ps, uint64_t seed) {
  make_table(ps, TABLE_FULL);
  host_init(h, ps, seed);
  char *path = tmp_path(name);
  dt_error_clear();
  assert_int_equal(dt_checkpoint_save(path, ps, h->weights, h->buffers, &h->opt, &h->meta), DT_OK);
  return path;
}

/* Tensor ranges of `in` equal those of `ref` bit for bit (weights, buffers and states). */
static void expect_same_tensors(const dt_params *ps, const host_state *in, const host_state *ref,
                                bool with_buffers, bool with_opt) {
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    size_t bytes = p->count * sizeof(float);
    if (p->flags & DT_PARAM_BUFFER) {
      if (with_buffers)
        assert_memory_equal(in->buffers + p->offset, ref->buffers + p->offset, bytes);
      continue;
    }
    assert_memory_equal(in->weights + p->offset, ref->weights + p->offset, bytes);
    if (with_opt) {
      assert_memory_equal(in->m1 + p->offset, ref->m1 + p->offset, bytes);
      assert_memory_equal(in->m2 + p->offset, ref->m2 + p->offset, bytes);
    }
  }
}

static bool all_equal(const float *x, size_t n, float v) {
  for (size_t i = 0; i < n; i++)
    if (x[i] != v) return false;
  return true;
}

static void expect_message_has(const char *fragment) {
  const char *msg = dt_error_message();
  if (!strstr(msg, fragment)) fail_msg("message \"%s\" lacks \"%s\"", msg, fragment);
}

/* No HDF5 file or object is left open (every path closes its handles). */
static void expect_no_open_handles(void) {
  assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

/* Number of entries of dir other than . and .. */
static int count_entries(const char *dir) {
  DIR *dp = opendir(dir);
  assert_non_null(dp);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dp)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
  closedir(dp);
  return n;
}

/* Loading `path` into a SENTINEL-filled state of table `variant` is refused with DT_ERR_DATA,
 * a message naming the file and each fragment, and untouched outputs. */
static void expect_refusal(const char *path, int variant, bool with_opt, const char *frag1,
                           const char *frag2, const char *frag3) {
  dt_params ps;
  make_table(&ps, variant);
  host_state out;
  host_init(&out, &ps, 0);
  dt_error_clear();
  dt_status st = dt_checkpoint_load(path, &ps, out.weights, out.buffers,
                                    with_opt ? &out.opt : NULL, &out.meta);
  assert_int_equal(st, DT_ERR_DATA);
  expect_message_has(path);
  if (frag1) expect_message_has(frag1);
  if (frag2) expect_message_has(frag2);
  if (frag3) expect_message_has(frag3);
  assert_true(strchr(dt_error_message(), '\n') == NULL);
  assert_true(all_equal(out.weights, ps.n_weights, SENTINEL));
  assert_true(all_equal(out.buffers, ps.n_buffers, SENTINEL));
  assert_true(all_equal(out.m1, ps.n_weights, SENTINEL));
  assert_true(all_equal(out.m2, ps.n_weights, SENTINEL));
  assert_int_equal(out.meta.epoch, -77);
  assert_null(out.meta.config_text);
  expect_no_open_handles();
  host_free(&out);
  free(ps.items);
}

static char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return buf;
}

static bool file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* Close a checkpoint edited in place and rewrite its seal, so that loading it reaches the
 * check that the edit is about rather than the whole-file checksum. */
static void close_sealed(hid_t f, const char *path) {
  assert_true(H5Fclose(f) >= 0);
  assert_int_equal(dt_checkpoint_seal(path), DT_OK);
}

/* ---- checkpoints ---- */

static void test_round_trip(void **s) {
  (void)s;
  dt_params ps;
  host_state ref;
  char *run = tmp_path("run_rt");
  assert_int_equal(mkdir(run, 0777), 0);
  char path[512];
  dt_checkpoint_path(run, 1234, path, sizeof path);
  make_table(&ps, TABLE_FULL);
  host_init(&ref, &ps, 11);
  dt_error_clear();
  assert_int_equal(dt_checkpoint_save(path, &ps, ref.weights, ref.buffers, &ref.opt, &ref.meta),
                   DT_OK);

  /* Full load: tensors bit-exact, alignment padding of the arenas untouched, meta equal. */
  host_state in;
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(path, &ps, in.weights, in.buffers, &in.opt, &in.meta), DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, true);
  assert_true(ps.n_weights > 148); /* padding exists between the tensors of this table */
  for (int i = 0; i < ps.count; i++) {
    const dt_param *p = &ps.items[i];
    size_t end = p->offset + p->count, next = (end + 15) / 16 * 16;
    const float *arena = (p->flags & DT_PARAM_BUFFER) ? in.buffers : in.weights;
    assert_true(all_equal(arena + end, next - end, SENTINEL));
  }
  assert_int_equal(in.meta.epoch, ref.meta.epoch);
  assert_int_equal(in.meta.step, ref.meta.step);
  assert_int_equal(in.meta.step_in_epoch, ref.meta.step_in_epoch);
  assert_int_equal(in.meta.optimizer_steps, ref.meta.optimizer_steps);
  assert_int_equal(in.meta.world_size, ref.meta.world_size);
  assert_int_equal(in.meta.seed, ref.meta.seed);
  assert_true(in.meta.loss_scale == ref.meta.loss_scale);
  assert_int_equal(in.meta.loss_scale_good, ref.meta.loss_scale_good);
  assert_memory_equal(in.meta.epoch_sums, ref.meta.epoch_sums, sizeof ref.meta.epoch_sums);
  assert_memory_equal(in.meta.window_sums, ref.meta.window_sums, sizeof ref.meta.window_sums);
  assert_int_equal(in.meta.epoch_skipped, ref.meta.epoch_skipped);
  assert_int_equal(in.meta.format_version, DT_CHECKPOINT_FORMAT);
  assert_string_equal(in.meta.model, ref.meta.model);
  assert_non_null(in.meta.config_text);
  assert_string_equal(in.meta.config_text, ref.meta.config_text);
  free(in.meta.config_text);
  host_free(&in);

  /* Weights only (--init): buffers, states and meta are left alone. */
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(path, &ps, in.weights, NULL, NULL, NULL), DT_OK);
  expect_same_tensors(&ps, &in, &ref, false, false);
  assert_true(all_equal(in.buffers, ps.n_buffers, SENTINEL));
  assert_true(all_equal(in.m1, ps.n_weights, SENTINEL));
  host_free(&in);

  /* The file describes itself: logical shapes, float32, format version, no temp file left. */
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  assert_true(f >= 0);
  hid_t ds = H5Dopen2(f, "/model/conv1.weight", H5P_DEFAULT);
  assert_true(ds >= 0);
  hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
  hsize_t dims[4];
  assert_int_equal(H5Sget_simple_extent_dims(sp, dims, NULL), 4);
  assert_true(dims[0] == 4 && dims[1] == 3 && dims[2] == 3 && dims[3] == 3);
  assert_true(H5Tequal(ty, H5T_IEEE_F32LE) > 0);
  H5Tclose(ty);
  H5Sclose(sp);
  H5Dclose(ds);
  assert_true(H5Lexists(f, "/optimizer/momentum/fc.weight", H5P_DEFAULT) > 0);
  assert_true(H5Lexists(f, "/optimizer/momentum/bn1.running_mean", H5P_DEFAULT) == 0);
  int64_t version = 0;
  hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
  assert_true(a >= 0);
  assert_true(H5Aread(a, H5T_NATIVE_INT64, &version) >= 0);
  assert_int_equal(version, DT_CHECKPOINT_FORMAT);
  H5Aclose(a);
  assert_true(H5Aexists(f, "created") > 0);
  H5Fclose(f);
  expect_no_open_handles();
  char dir[600];
  snprintf(dir, sizeof dir, "%s/checkpoints", run);
  assert_int_equal(count_entries(dir), 1); /* no temporary file left behind */

  host_free(&ref);
  free(ps.items);
  free(run);
}

static void test_refuse_mismatched_tables(void **s) {
  (void)s;
  dt_params ps;
  host_state ref;
  char *path = save_reference("tables.h5", &ref, &ps, 21);
  expect_refusal(path, TABLE_SHAPE, true, "fc.weight", "(10,4) in the file", "(10,5) in the model");
  expect_refusal(path, TABLE_EXTRA, true, "fc2.bias", "missing", NULL);
  expect_refusal(path, TABLE_MISSING, true, "fc.bias", "the model lacks", NULL);
  /* The matching table still loads. */
  host_state in;
  host_init(&in, &ps, 0);
  dt_error_clear();
  assert_int_equal(dt_checkpoint_load(path, &ps, in.weights, in.buffers, &in.opt, NULL), DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, true);
  host_free(&in);
  /* Optimizer state asked for but never saved. */
  char *bare = tmp_path("bare.h5");
  assert_int_equal(dt_checkpoint_save(bare, &ps, ref.weights, ref.buffers, NULL, &ref.meta), DT_OK);
  expect_refusal(bare, TABLE_FULL, true, "no optimizer state", NULL, NULL);
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(bare, &ps, in.weights, in.buffers, NULL, NULL), DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, false);
  host_free(&in);
  free(bare);
  host_free(&ref);
  free(ps.items);
  free(path);
}

static void test_refuse_future_version(void **s) {
  (void)s;
  dt_params ps;
  host_state ref;
  char *path = save_reference("future.h5", &ref, &ps, 31);
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
  assert_true(a >= 0);
  int64_t v = DT_CHECKPOINT_FORMAT + 1;
  assert_true(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
  H5Aclose(a);
  close_sealed(f, path);
  char want[64];
  snprintf(want, sizeof want, "format %d, this one reads up to %d", DT_CHECKPOINT_FORMAT + 1,
           DT_CHECKPOINT_FORMAT);
  expect_refusal(path, TABLE_FULL, true, "newer dtrain", want, NULL);
  /* And without the attribute at all. */
  f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  assert_true(H5Adelete(f, "format_version") >= 0);
  close_sealed(f, path);
  expect_refusal(path, TABLE_FULL, true, "format_version", NULL, NULL);
  host_free(&ref);
  free(ps.items);
  free(path);
}

/* The backend's algorithm choices (/backend/conv_algorithms) come back row for row; a file
 * without them loads with none; a table of the wrong width is refused. */
static void test_algorithm_choices(void **s) {
  (void)s;
  dt_params ps;
  host_state ref, in;
  enum { ROWS = 3 };
  int32_t rows[ROWS * DT_CHECKPOINT_ALGO_COLS];
  for (int i = 0; i < ROWS * DT_CHECKPOINT_ALGO_COLS; i++) rows[i] = i * 7 - 5;
  make_table(&ps, TABLE_FULL);
  host_init(&ref, &ps, 5);
  ref.meta.algos = rows;
  ref.meta.n_algos = ROWS;
  char *path = tmp_path("algos.h5");
  /* Chosen with and without train.deterministic: the table and that setting come back. */
  for (int det = 1; det >= 0; det--) {
    ref.meta.algos_deterministic = det;
    assert_int_equal(dt_checkpoint_save(path, &ps, ref.weights, ref.buffers, &ref.opt, &ref.meta),
                     DT_OK);
    host_init(&in, &ps, 0);
    assert_int_equal(dt_checkpoint_load(path, &ps, in.weights, in.buffers, &in.opt, &in.meta),
                     DT_OK);
    assert_int_equal(in.meta.n_algos, ROWS);
    assert_non_null(in.meta.algos);
    assert_memory_equal(in.meta.algos, rows, sizeof rows);
    assert_int_equal(in.meta.algos_deterministic, det);
    free(in.meta.algos);
    free(in.meta.config_text);
    host_free(&in);
  }
  /* A file from before the attribute: the table loads, its setting unknown (-1). */
  char *old = tmp_path("algos_old.h5");
  assert_int_equal(dt_checkpoint_save(old, &ps, ref.weights, ref.buffers, &ref.opt, &ref.meta),
                   DT_OK);
  hid_t fo = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(fo >= 0);
  hid_t dso = H5Dopen2(fo, "backend/conv_algorithms", H5P_DEFAULT);
  assert_true(dso >= 0 && H5Adelete(dso, "deterministic") >= 0);
  H5Dclose(dso);
  close_sealed(fo, old);
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(old, &ps, in.weights, in.buffers, &in.opt, &in.meta), DT_OK);
  assert_int_equal(in.meta.n_algos, ROWS);
  assert_int_equal(in.meta.algos_deterministic, -1);
  free(in.meta.algos);
  free(in.meta.config_text);
  host_free(&in);
  /* A setting other than 0 or 1 is refused. */
  fo = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(fo >= 0);
  dso = H5Dopen2(fo, "backend/conv_algorithms", H5P_DEFAULT);
  hid_t asp = H5Screate(H5S_SCALAR);
  hid_t at = H5Acreate2(dso, "deterministic", H5T_STD_I64LE, asp, H5P_DEFAULT, H5P_DEFAULT);
  const int64_t two = 2;
  assert_true(at >= 0 && H5Awrite(at, H5T_NATIVE_INT64, &two) >= 0);
  H5Aclose(at);
  H5Sclose(asp);
  H5Dclose(dso);
  close_sealed(fo, old);
  expect_refusal(old, TABLE_FULL, true, "/backend/conv_algorithms", "deterministic", NULL);
  free(old);

  /* None saved: none loaded. */
  char *none = tmp_path("algos_none.h5");
  ref.meta.algos = NULL;
  ref.meta.n_algos = 0;
  assert_int_equal(dt_checkpoint_save(none, &ps, ref.weights, ref.buffers, &ref.opt, &ref.meta),
                   DT_OK);
  host_init(&in, &ps, 0);
  in.meta.n_algos = 99;
  assert_int_equal(dt_checkpoint_load(none, &ps, in.weights, in.buffers, &in.opt, &in.meta), DT_OK);
  assert_null(in.meta.algos);
  assert_int_equal(in.meta.n_algos, 0);
  free(in.meta.config_text);
  host_free(&in);

  /* Five columns instead of DT_CHECKPOINT_ALGO_COLS. */
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  assert_true(H5Ldelete(f, "backend/conv_algorithms", H5P_DEFAULT) >= 0);
  const hsize_t dims[2] = {2, 5};
  hid_t sp = H5Screate_simple(2, dims, NULL);
  hid_t ds = H5Dcreate2(f, "backend/conv_algorithms", H5T_STD_I32LE, sp, H5P_DEFAULT,
                        H5P_DEFAULT, H5P_DEFAULT);
  assert_true(ds >= 0);
  assert_true(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) >= 0);
  H5Dclose(ds);
  H5Sclose(sp);
  close_sealed(f, path);
  expect_refusal(path, TABLE_FULL, true, "/backend/conv_algorithms", "columns", NULL);
  host_free(&ref);
  free(ps.items);
  free(path);
  free(none);
}

/* The seal (a whole-file CRC-32 in HDF5's user block) is checked before HDF5 reads the file:
 * any one flipped bit after the user block, or in its header, is refused with one message
 * and the outputs untouched. An unsealed file of an older dtrain still loads. */
static void test_seal(void **s) {
  (void)s;
  dt_params ps;
  host_state ref;
  char *path = save_reference("sealed.h5", &ref, &ps, 43);
  size_t n;
  unsigned char *bytes = (unsigned char *)read_bytes(path, &n);
  assert_true(n > DT_CHECKPOINT_USERBLOCK + 1000);
  assert_memory_equal(bytes, "DTRAIN-CHECKPOINT", 18);
  /* Resealing an intact file changes nothing. */
  assert_int_equal(dt_checkpoint_seal(path), DT_OK);
  size_t n2;
  char *again = read_bytes(path, &n2);
  assert_int_equal(n2, n);
  assert_memory_equal(again, bytes, n);
  free(again);
  host_state in;
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(path, &ps, in.weights, in.buffers, &in.opt, &in.meta), DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, true);
  free(in.meta.config_text);
  free(in.meta.algos);
  host_free(&in);

  /* One bit flipped, at every byte after the user block (bit i % 8 of byte i) and at every
   * byte of the header: refused before HDF5 sees it. */
  char *flipped = tmp_path("flipped.h5");
  host_init(&in, &ps, 0);
  for (size_t i = 0; i < n; i++) {
    if (i >= 34 && i < DT_CHECKPOINT_USERBLOCK) continue; /* the user block's zero padding */
    bytes[i] ^= (unsigned char)(1u << (i % 8));
    assert_int_equal(tu_write_file(flipped, bytes, n), 0);
    bytes[i] ^= (unsigned char)(1u << (i % 8));
    dt_error_clear();
    dt_status st = dt_checkpoint_load(flipped, &ps, in.weights, in.buffers, &in.opt, &in.meta);
    if (st != DT_ERR_DATA) fail_msg("a flipped bit in byte %zu was not refused", i);
    const char *want = i < 22 ? "neither dtrain's checksum header nor the HDF5 signature"
                              : "the file's checksum does not match (truncated or corrupt)";
    if (!strstr(dt_error_message(), want))
      fail_msg("byte %zu: message \"%s\" lacks \"%s\"", i, dt_error_message(), want);
  }
  host_free(&in);
  bytes[DT_CHECKPOINT_USERBLOCK + 100] ^= 0x10;
  assert_int_equal(tu_write_file(flipped, bytes, n), 0);
  bytes[DT_CHECKPOINT_USERBLOCK + 100] ^= 0x10;
  expect_refusal(flipped, TABLE_FULL, true, "the file's checksum does not match", "CRC-32", NULL);
  char *longer = tmp_path("longer.h5");
  unsigned char *plus = malloc(n + 1);
  memcpy(plus, bytes, n);
  plus[n] = 0;
  assert_int_equal(tu_write_file(longer, plus, n + 1), 0);
  expect_refusal(longer, TABLE_FULL, true, "the file's checksum does not match", "holds", NULL);
  free(plus);

  /* A corruption of HDF5's metadata that crashes HDF5 1.10.8 itself (found by
   * fuzz_checkpoint_raw under ASan, tests/fuzz/hdf5_crashes), applied to a sealed file: the
   * seal of the seed it was mutated from (segv_h5aexists.seed.h5, an unsealed seed of that
   * corpus) in front of the corrupt bytes. */
  size_t nseed, ncrash;
  char *seed = read_bytes("tests/fuzz/hdf5_crashes/segv_h5aexists.seed.h5", &nseed);
  char *crash = read_bytes("tests/fuzz/hdf5_crashes/segv_h5aexists.h5", &ncrash);
  assert_int_equal(nseed, ncrash);
  unsigned char *img = calloc(DT_CHECKPOINT_USERBLOCK + nseed, 1);
  memcpy(img + DT_CHECKPOINT_USERBLOCK, seed, nseed);
  char *seed_sealed = tmp_path("seed_sealed.h5");
  assert_int_equal(tu_write_file(seed_sealed, img, DT_CHECKPOINT_USERBLOCK + nseed), 0);
  assert_int_equal(dt_checkpoint_seal(seed_sealed), DT_OK);
  free(img);
  img = (unsigned char *)read_bytes(seed_sealed, &n2);
  memcpy(img + DT_CHECKPOINT_USERBLOCK, crash, ncrash);
  char *crash_sealed = tmp_path("crash_sealed.h5");
  assert_int_equal(tu_write_file(crash_sealed, img, n2), 0);
  /* Loaded as that harness loads it: its table, "momentum" and the metadata. */
  dt_params fps;
  fuzz_ckpt_table(&fps);
  float *fw = fuzz_filled(fps.n_weights, SENTINEL), *fb = fuzz_filled(fps.n_buffers, SENTINEL),
        *fm = fuzz_filled(fps.n_weights, SENTINEL);
  dt_optim_state fopt = {.names = {"momentum"}, .arrays = {fm}, .n_states = 1};
  dt_checkpoint_meta fmeta = {0};
  dt_error_clear();
  assert_int_equal(dt_checkpoint_load(crash_sealed, &fps, fw, fb, &fopt, &fmeta), DT_ERR_DATA);
  expect_message_has(crash_sealed);
  expect_message_has("the file's checksum does not match");
  assert_true(all_equal(fw, fps.n_weights, SENTINEL) && all_equal(fb, fps.n_buffers, SENTINEL) &&
              all_equal(fm, fps.n_weights, SENTINEL));
  assert_null(fmeta.config_text);
  /* The seed itself, sealed, loads. */
  assert_int_equal(dt_checkpoint_load(seed_sealed, &fps, fw, fb, &fopt, &fmeta), DT_OK);
  assert_int_equal(fmeta.step, 12);
  free(fmeta.config_text);
  free(fw);
  free(fb);
  free(fm);
  free(fps.items);
  free(img);
  free(seed);
  free(crash);

  /* A file of an older dtrain, without the user block, loads as before. */
  char *legacy = tmp_path("legacy.h5");
  assert_int_equal(tu_write_file(legacy, bytes + DT_CHECKPOINT_USERBLOCK,
                                 n - DT_CHECKPOINT_USERBLOCK), 0);
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(legacy, &ps, in.weights, in.buffers, &in.opt, &in.meta),
                   DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, true);
  free(in.meta.config_text);
  free(in.meta.algos);
  host_free(&in);
  /* It has no room for a seal. */
  dt_error_clear();
  assert_int_equal(dt_checkpoint_seal(legacy), DT_ERR_IO);
  expect_message_has("no user block");
  expect_no_open_handles();

  free(bytes);
  free(path);
  free(flipped);
  free(longer);
  free(seed_sealed);
  free(crash_sealed);
  free(legacy);
  host_free(&ref);
  free(ps.items);
}

static void test_refuse_broken_files(void **s) {
  (void)s;
  dt_params ps;
  host_state ref;
  char *path = save_reference("whole.h5", &ref, &ps, 41);
  size_t n;
  char *bytes = read_bytes(path, &n);
  assert_true(n > 1000);

  char *half = tmp_path("half.h5");
  assert_int_equal(tu_write_file(half, bytes, n / 2), 0);
  expect_refusal(half, TABLE_FULL, true, "the file's checksum does not match (truncated or corrupt)",
                 NULL, NULL);
  /* Cut just short of the end too: the last bytes hold data, not only metadata. */
  char *short_by_one = tmp_path("short.h5");
  assert_int_equal(tu_write_file(short_by_one, bytes, n - 1), 0);
  expect_refusal(short_by_one, TABLE_FULL, true, "truncated or corrupt", NULL, NULL);

  char *random = tmp_path("random.h5");
  tu_fill_uniform((float *)bytes, n / sizeof(float), 5, -1e30f, 1e30f);
  assert_int_equal(tu_write_file(random, bytes, n), 0);
  expect_refusal(random, TABLE_FULL, true, "not a readable HDF5 checkpoint", NULL, NULL);

  char *empty = tmp_path("empty.h5");
  assert_int_equal(tu_write_file(empty, "", 0), 0);
  expect_refusal(empty, TABLE_FULL, false, "not a readable HDF5 checkpoint", NULL, NULL);

  char *missing = tmp_path("no-such-file.h5");
  expect_refusal(missing, TABLE_FULL, false, "No such file", NULL, NULL);

  /* A save into a directory that does not exist is DT_ERR_IO naming the file. */
  char *nodir = tmp_path("no-such-dir/x.h5");
  dt_error_clear();
  assert_int_equal(dt_checkpoint_save(nodir, &ps, ref.weights, ref.buffers, &ref.opt, &ref.meta),
                   DT_ERR_IO);
  expect_message_has(nodir);

  /* A save that fails halfway (HDF5 refuses a tensor name with a slash) removes its
   * temporary file and leaves no handle open. */
  dt_params bad = {0};
  int d4[1] = {4};
  dt_params_add(&bad, "conv1.weight", 1, d4, 0, DT_INIT_ZEROS, 0, 0);
  dt_params_add(&bad, "no/such/group", 1, d4, 0, DT_INIT_ZEROS, 0, 0);
  char *sub = tmp_path("failing");
  assert_int_equal(mkdir(sub, 0777), 0);
  char *failing = tmp_path("failing/x.h5");
  dt_error_clear();
  assert_int_equal(dt_checkpoint_save(failing, &bad, ref.weights, ref.buffers, NULL, &ref.meta),
                   DT_ERR_IO);
  expect_message_has(failing);
  assert_int_equal(count_entries(sub), 0);
  expect_no_open_handles();
  free(bad.items);
  free(failing);
  free(sub);

  free(nodir);
  free(missing);
  free(empty);
  free(random);
  free(short_by_one);
  free(half);
  free(bytes);
  host_free(&ref);
  free(ps.items);
  free(path);
}

/* A copy of `src` named `name` under g_dir, opened for writing. */
static hid_t open_copy(const char *src, const char *name, char **path) {
  size_t n;
  char *bytes = read_bytes(src, &n);
  *path = tmp_path(name);
  assert_int_equal(tu_write_file(*path, bytes, n), 0);
  free(bytes);
  hid_t f = H5Fopen(*path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  return f;
}

static void set_attr_i64(hid_t loc, const char *name, int64_t v) {
  if (H5Aexists(loc, name) > 0) assert_true(H5Adelete(loc, name) >= 0);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  assert_true(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
  H5Aclose(a);
  H5Sclose(sp);
}

static void set_attr_f64(hid_t loc, const char *name, double v) {
  assert_true(H5Adelete(loc, name) >= 0);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  assert_true(a >= 0 && H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0);
  H5Aclose(a);
  H5Sclose(sp);
}

/* Set element `index` of the float tensor `name` (at most 64 values) to v; with fix_crc, its
 * checksum attribute follows, so that only the value is wrong. */
static void poke(hid_t f, const char *name, int index, float v, bool fix_crc) {
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  assert_true(ds >= 0);
  hid_t sp = H5Dget_space(ds);
  hssize_t n = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  float x[64];
  assert_true(n > index && n <= 64);
  assert_true(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
  x[index] = v;
  assert_true(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
  if (fix_crc) set_attr_i64(ds, "crc32", (int64_t)crc32(0L, (const Bytef *)x, (uInt)(n * 4)));
  H5Dclose(ds);
}

static herr_t drop_crc(hid_t obj, const char *name, const H5O_info_t *info, void *data) {
  (void)data;
  if (info->type == H5O_TYPE_DATASET && H5Aexists_by_name(obj, name, "crc32", H5P_DEFAULT) > 0)
    assert_true(H5Adelete_by_name(obj, name, "crc32", H5P_DEFAULT) >= 0);
  return 0;
}

static void test_refuse_bad_values(void **s) {
  (void)s;
  dt_params ps;
  host_state ref;
  char *src = save_reference("values.h5", &ref, &ps, 51);
  char *path;
  hid_t f;
  /* One case per mutation: the file is a fresh copy each time. */
#define CASE(name, mutation, frag1, frag2)  \
  f = open_copy(src, name, &path);           \
  mutation;                                  \
  close_sealed(f, path);                     \
  expect_refusal(path, TABLE_FULL, true, frag1, frag2, NULL); \
  free(path)
  CASE("v_sie.h5", set_attr_i64(f, "step_in_epoch", -1), "step_in_epoch = -1", "out of range");
  CASE("v_step.h5", set_attr_i64(f, "step", -5), "step = -5", "out of range");
  CASE("v_bigstep.h5", set_attr_i64(f, "step", 10000000000000L), "step = 10000000000000", NULL);
  CASE("v_epoch.h5", set_attr_i64(f, "epoch", -1), "epoch = -1", "out of range");
  CASE("v_world0.h5", set_attr_i64(f, "world_size", 0), "world_size = 0", "out of range");
  CASE("v_worldbig.h5", set_attr_i64(f, "world_size", 4294967297L), "world_size = 4294967297", NULL);
  CASE("v_sie_step.h5", set_attr_i64(f, "step_in_epoch", 5000), "step_in_epoch = 5000 exceeds step", NULL);
  CASE("v_opt_steps.h5", set_attr_i64(f, "optimizer_steps", 5000), "optimizer_steps = 5000 exceeds", NULL);
  CASE("v_scale_inf.h5", set_attr_f64(f, "loss_scale", INFINITY), "loss_scale = inf", NULL);
  CASE("v_scale_neg.h5", set_attr_f64(f, "loss_scale", -2), "loss_scale = -2", NULL);
  CASE("v_sum_nan.h5", set_attr_f64(f, "window_loss_sum", NAN), "window_loss_sum = nan", NULL);
  CASE("v_correct.h5", set_attr_f64(f, "epoch_correct", 65), "correct 65 of 64 images", NULL);
  CASE("v_skipped.h5", set_attr_i64(f, "epoch_skipped_steps", 18), "epoch_skipped_steps = 18", NULL);
  CASE("v_flip.h5", poke(f, "model/fc.bias", 3, 0.5f, false), "fc.bias: checksum mismatch", NULL);
  CASE("v_nocrc.h5", H5Adelete_by_name(f, "optimizer/exp_avg_sq/bn1.weight", "crc32", H5P_DEFAULT),
       "exp_avg_sq/bn1.weight has no checksum", NULL);
  CASE("v_nan_w.h5", poke(f, "model/fc.bias", 2, NAN, true), "fc.bias holds a non-finite value (NaN at index 2)", NULL);
  CASE("v_inf_m.h5", poke(f, "optimizer/momentum/bn1.bias", 1, -INFINITY, true),
       "optimizer state momentum/bn1.bias holds a non-finite value (-inf at index 1)", NULL);
  CASE("v_var.h5", poke(f, "model/bn1.running_var", 0, -1e-3f, true),
       "bn1.running_var holds a negative variance", NULL);
  CASE("v_ext.h5",
       (H5Ldelete(f, "model/fc.bias", H5P_DEFAULT),
        H5Lcreate_external(src, "/model/fc.bias", f, "model/fc.bias", H5P_DEFAULT, H5P_DEFAULT)),
       "fc.bias is an external link", NULL);
  CASE("v_soft.h5",
       (H5Ldelete(f, "model/fc.bias", H5P_DEFAULT),
        H5Lcreate_soft("/model/bn1.bias", f, "model/fc.bias", H5P_DEFAULT, H5P_DEFAULT)),
       "fc.bias is a soft link", NULL);
  CASE("v_extgroup.h5",
       (H5Ldelete(f, "optimizer", H5P_DEFAULT),
        H5Lcreate_external(src, "/optimizer", f, "optimizer", H5P_DEFAULT, H5P_DEFAULT)),
       "/optimizer is an external link", NULL);
#undef CASE
  /* A file of format 1 (before checksums and the metrics state) still loads, bit-exactly. */
  f = open_copy(src, "v_format1.h5", &path);
  assert_true(H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, drop_crc, NULL) >= 0);
  static const char *const added[] = {"epoch_loss_sum", "epoch_correct", "epoch_images",
                                      "window_loss_sum", "window_correct", "window_images",
                                      "epoch_skipped_steps"};
  for (size_t k = 0; k < DT_ARRAY_LEN(added); k++) assert_true(H5Adelete(f, added[k]) >= 0);
  set_attr_i64(f, "format_version", 1);
  close_sealed(f, path);
  host_state in;
  host_init(&in, &ps, 0);
  dt_error_clear();
  assert_int_equal(dt_checkpoint_load(path, &ps, in.weights, in.buffers, &in.opt, &in.meta), DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, true);
  assert_int_equal(in.meta.format_version, 1);
  assert_true(in.meta.epoch_sums[2] == 0 && in.meta.window_sums[2] == 0);
  free(in.meta.config_text);
  host_free(&in);
  /* The same file claiming format 2 lacks its checksums. */
  f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  set_attr_i64(f, "format_version", 2);
  close_sealed(f, path);
  expect_refusal(path, TABLE_FULL, true, "has no checksum", NULL, NULL);
  free(path);
  expect_no_open_handles();
  host_free(&ref);
  free(ps.items);
  free(src);
}

static void test_latest_prune_path(void **s) {
  (void)s;
  char *run = tmp_path("run_dir");
  assert_int_equal(mkdir(run, 0777), 0);
  char out[512], want[512];
  dt_error_clear();
  assert_int_equal(dt_checkpoint_latest(run, out, sizeof out), DT_ERR_DATA);
  expect_message_has(run);

  char p5[512], p20[512], p100[512];
  dt_checkpoint_path(run, 5, p5, sizeof p5);
  snprintf(want, sizeof want, "%s/checkpoints/step_000000005.h5", run);
  assert_string_equal(p5, want);
  dt_checkpoint_path(run, 100, p100, sizeof p100);
  dt_checkpoint_path(run, 20, p20, sizeof p20);
  assert_int_equal(tu_write_file(p5, "x", 1), 0);
  assert_int_equal(tu_write_file(p100, "x", 1), 0);
  assert_int_equal(tu_write_file(p20, "x", 1), 0);
  const char *noise[] = {".step_000000999.h5.tmp.123", "step_abc.h5", "step_000000500.h5.bak",
                         "notes.txt"};
  for (size_t i = 0; i < DT_ARRAY_LEN(noise); i++) {
    snprintf(want, sizeof want, "%s/checkpoints/%s", run, noise[i]);
    assert_int_equal(tu_write_file(want, "x", 1), 0);
  }
  dt_error_clear();
  assert_int_equal(dt_checkpoint_latest(run, out, sizeof out), DT_OK);
  assert_string_equal(out, p100);

  dt_checkpoint_prune(run, 0);
  assert_true(file_exists(p5));
  dt_checkpoint_prune(run, 2);
  assert_false(file_exists(p5));
  assert_true(file_exists(p20));
  assert_true(file_exists(p100));
  for (size_t i = 0; i < DT_ARRAY_LEN(noise); i++) {
    snprintf(want, sizeof want, "%s/checkpoints/%s", run, noise[i]);
    assert_true(file_exists(want));
  }
  dt_checkpoint_prune(run, 1);
  assert_false(file_exists(p20));
  assert_int_equal(dt_checkpoint_latest(run, out, sizeof out), DT_OK);
  assert_string_equal(out, p100);

  char *gone = tmp_path("no-such-run");
  dt_error_clear();
  assert_int_equal(dt_checkpoint_latest(gone, out, sizeof out), DT_ERR_DATA);
  dt_checkpoint_prune(gone, 1);
  free(gone);
  free(run);
}

static void test_kill_during_save(void **s) {
  (void)s;
  dt_params ps;
  make_table(&ps, TABLE_FULL);
  host_state ref, next;
  host_init(&ref, &ps, 51);
  host_init(&next, &ps, 52);
  char *run = tmp_path("run_kill");
  assert_int_equal(mkdir(run, 0777), 0);
  char first[512], second[512];
  dt_checkpoint_path(run, 10, first, sizeof first);
  dt_error_clear();
  assert_int_equal(dt_checkpoint_save(first, &ps, ref.weights, ref.buffers, &ref.opt, &ref.meta),
                   DT_OK);
  dt_checkpoint_path(run, 20, second, sizeof second);

  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("DTRAIN_FAULT_CHECKPOINT", "kill", 1);
    dt_checkpoint_save(second, &ps, next.weights, next.buffers, &next.opt, &next.meta);
    _exit(3); /* reaching here means the fault switch did nothing */
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);

  /* A partial temporary file is left behind, the new name never appeared. */
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s/checkpoints/.step_000000020.h5.tmp.%ld", run, (long)pid);
  assert_true(file_exists(tmp));
  assert_false(file_exists(second));

  char latest[512];
  dt_error_clear();
  assert_int_equal(dt_checkpoint_latest(run, latest, sizeof latest), DT_OK);
  assert_string_equal(latest, first);
  host_state in;
  host_init(&in, &ps, 0);
  assert_int_equal(dt_checkpoint_load(latest, &ps, in.weights, in.buffers, &in.opt, &in.meta),
                   DT_OK);
  expect_same_tensors(&ps, &in, &ref, true, true);
  assert_int_equal(in.meta.step, ref.meta.step);
  free(in.meta.config_text);
  host_free(&in);

  /* Without the switch the same save goes through. */
  assert_int_equal(dt_checkpoint_save(second, &ps, next.weights, next.buffers, &next.opt,
                                      &next.meta),
                   DT_OK);
  assert_int_equal(dt_checkpoint_latest(run, latest, sizeof latest), DT_OK);
  assert_string_equal(latest, second);

  host_free(&ref);
  host_free(&next);
  free(ps.items);
  free(run);
}

/* ---- metrics ---- */

/* Length of dataset `name` in path (-1 if absent), its first `max` values into out. The file
 * is opened read-only and closed again, as a reader would while the run goes on. */
static long read_column(const char *path, const char *name, double *out, size_t max) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  assert_true(f >= 0);
  long n = -1;
  char group[64];
  snprintf(group, sizeof group, "%.*s", (int)(strrchr(name, '/') - name), name);
  if (H5Lexists(f, group, H5P_DEFAULT) > 0 && H5Lexists(f, name, H5P_DEFAULT) > 0) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds);
    hsize_t len;
    assert_int_equal(H5Sget_simple_extent_dims(sp, &len, NULL), 1);
    n = (long)len;
    double *all = malloc((len ? len : 1) * sizeof *all);
    assert_true(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, all) >= 0);
    memcpy(out, all, DT_MIN((size_t)len, max) * sizeof *out);
    free(all);
    H5Sclose(sp);
    H5Dclose(ds);
  }
  assert_true(H5Fclose(f) >= 0);
  return n;
}

static dt_epoch_row epoch_row(int e, double variant) {
  return (dt_epoch_row){.epoch = e,
                        .step = 100.0 * e,
                        .lr = 0.1 / e,
                        .train_loss = 2.0 / e + variant,
                        .train_top1 = 0.5 + 0.1 * e,
                        .test_loss = 1.5 / e,
                        .test_top1 = 0.4 + 0.1 * e,
                        .test_top5 = 0.9 + 0.01 * e,
                        .seconds = 10 + e,
                        .images_per_s = 1000 * e};
}

/* Steps 25, 50, 75, 100 of epoch e (1-based) go before its epoch row. */
static void log_epoch_steps(dt_metrics *m, int e) {
  for (int k = 1; k <= 4; k++) {
    double step = 100.0 * (e - 1) + 25 * k;
    dt_step_row r = {.step = step, .epoch = e, .lr = 0.1, .loss = 1.0 / step, .top1 = 0.5,
                     .images_per_s = 900};
    dt_metrics_step(m, &r);
  }
}

static void test_metrics(void **s) {
  (void)s;
  char *path = tmp_path("metrics.h5");
  dt_metrics *m = NULL;
  dt_error_clear();
  assert_int_equal(dt_metrics_open(&m, path, -1), DT_OK);
  double v[64];
  for (int e = 1; e <= 3; e++) {
    log_epoch_steps(m, e);
    /* Buffered step rows are not in the file before the flush. */
    assert_int_equal(read_column(path, "/steps/step", v, 64), e == 1 ? -1 : 4 * (e - 1));
    dt_epoch_row r = epoch_row(e, 0);
    assert_int_equal(dt_metrics_epoch(m, &r), DT_OK);
    /* Readable by another opener while the handle lives on. */
    assert_int_equal(read_column(path, "/epoch/epoch", v, 64), e);
    assert_true(v[e - 1] == e);
    assert_int_equal(read_column(path, "/steps/step", v, 64), 4 * e);
  }
  dt_step_row tail = {.step = 310, .epoch = 4, .lr = 0.01, .loss = 0.3, .top1 = 0.9,
                      .images_per_s = 950};
  dt_metrics_step(m, &tail);
  dt_metrics_close(m);

  /* Every column of every row, read back with the HDF5 API. */
  const char *ecols[] = {"epoch", "step", "lr", "train_loss", "train_top1", "test_loss",
                         "test_top1", "test_top5", "seconds", "images_per_s"};
  for (size_t c = 0; c < DT_ARRAY_LEN(ecols); c++) {
    char name[64];
    snprintf(name, sizeof name, "/epoch/%s", ecols[c]);
    assert_int_equal(read_column(path, name, v, 64), 3);
    for (int e = 1; e <= 3; e++) {
      dt_epoch_row r = epoch_row(e, 0);
      assert_true(v[e - 1] == ((const double *)&r)[c]);
    }
  }
  assert_int_equal(read_column(path, "/steps/step", v, 64), 13);
  assert_true(v[0] == 25 && v[11] == 300 && v[12] == 310);
  assert_int_equal(read_column(path, "/steps/loss", v, 64), 13);
  assert_true(v[1] == 1.0 / 50 && v[12] == 0.3);
  assert_int_equal(read_column(path, "/steps/images_per_s", v, 64), 13);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  assert_true(f >= 0);
  int64_t version = 0;
  hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
  assert_true(a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &version) >= 0);
  assert_int_equal(version, 1);
  H5Aclose(a);
  hid_t g = H5Gopen2(f, "epoch", H5P_DEFAULT);
  assert_true(H5Aexists(g, "columns") > 0);
  H5Gclose(g);
  hid_t ds = H5Dopen2(f, "/steps/step", H5P_DEFAULT);
  hid_t sp = H5Dget_space(ds);
  hsize_t len, maxlen;
  H5Sget_simple_extent_dims(sp, &len, &maxlen);
  assert_true(maxlen == H5S_UNLIMITED);
  H5Sclose(sp);
  H5Dclose(ds);
  H5Fclose(f);

  /* Resume after step 200: epoch 3, steps 225..310 belonged to the lost part of the run. */
  dt_error_clear();
  assert_int_equal(dt_metrics_open(&m, path, 200), DT_OK);
  assert_int_equal(read_column(path, "/epoch/epoch", v, 64), 2);
  assert_int_equal(read_column(path, "/epoch/test_top5", v, 64), 2);
  assert_int_equal(read_column(path, "/steps/step", v, 64), 8);
  assert_true(v[7] == 200);
  assert_int_equal(read_column(path, "/steps/top1", v, 64), 8);
  log_epoch_steps(m, 3);
  dt_epoch_row r3 = epoch_row(3, 0.5);
  assert_int_equal(dt_metrics_epoch(m, &r3), DT_OK);
  dt_metrics_close(m);
  assert_int_equal(read_column(path, "/epoch/train_loss", v, 64), 3);
  assert_true(v[2] == r3.train_loss);
  assert_int_equal(read_column(path, "/steps/step", v, 64), 12);
  assert_true(v[8] == 225 && v[11] == 300);

  /* Resume with no file yet: created fresh. */
  char *fresh = tmp_path("fresh-metrics.h5");
  assert_int_equal(dt_metrics_open(&m, fresh, 500), DT_OK);
  assert_true(file_exists(fresh));
  assert_int_equal(read_column(fresh, "/epoch/epoch", v, 64), -1);
  dt_metrics_close(m);

  /* Resume on a file that is not HDF5, and a fresh file in a missing directory: DT_ERR_IO. */
  char *junk = tmp_path("junk-metrics.h5");
  assert_int_equal(tu_write_file(junk, "not hdf5 at all", 15), 0);
  dt_error_clear();
  assert_int_equal(dt_metrics_open(&m, junk, 10), DT_ERR_IO);
  assert_null(m);
  expect_message_has(junk);
  char *nodir = tmp_path("no-such-dir/metrics.h5");
  dt_error_clear();
  assert_int_equal(dt_metrics_open(&m, nodir, -1), DT_ERR_IO);
  expect_message_has(nodir);
  expect_no_open_handles();

  free(nodir);
  free(junk);
  free(fresh);
  free(path);
}

static int setup(void **s) {
  (void)s;
  g_dir = tu_tmpdir("io");
  return 0;
}

static int teardown(void **s) {
  (void)s;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  int rc = system(cmd);
  free(g_dir);
  return rc == 0 ? 0 : -1;
}


/* Little-endian integers of a record. */
static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint32_t le32(const uint8_t *p) { return (uint32_t)le64((const uint8_t[8]){p[0], p[1], p[2], p[3]}); }

/* Whether the n bytes at p hold the k bytes of what. */
static bool holds(const uint8_t *p, size_t n, const void *what, size_t k) {
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp(p + i, what, k) == 0) return true;
  return false;
}

/* The whole file (malloc'ed) and its size. */
static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  rewind(f);
  uint8_t *buf = malloc(*n + 1);
  assert_int_equal(fread(buf, 1, *n, f), *n);
  fclose(f);
  return buf;
}

static void test_tfevents(void **s) {
  (void)s;
  /* CRC-32C check values: "123456789" (the standard check), 32 zero bytes and 32 0xFF bytes
   * (the iSCSI test vectors); in two pieces as in one. */
  assert_int_equal(dt_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(dt_crc32c(dt_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
  uint8_t zeros[32] = {0}, ones[32];
  memset(ones, 0xFF, sizeof ones);
  assert_int_equal(dt_crc32c(0, zeros, 32), 0x8A9136AAu);
  assert_int_equal(dt_crc32c(0, ones, 32), 0x62A8AB43u);
  assert_int_equal(dt_crc32c(0, "", 0), 0u);
  assert_int_equal(dt_crc32c_mask(0), 0xa282ead8u);
  assert_int_equal(dt_crc32c_mask(0xE3069283u), ((0xE3069283u >> 15) | (0xE3069283u << 17)) + 0xa282ead8u);

  /* A file with a stamp later than now in the directory: the new file's name sorts after it. */
  char *dir = tmp_path("tb");
  assert_int_equal(mkdir(dir, 0777), 0);
  const long future = (long)time(NULL) + 100;
  char old[4200], want[64];
  snprintf(old, sizeof old, "%s/events.out.tfevents.%ld.host.1", dir, future);
  FILE *f = fopen(old, "wb");
  assert_non_null(f);
  fclose(f);
  dt_tfevents *w = dt_tfevents_open(dir, 7);
  assert_non_null(w);
  snprintf(want, sizeof want, "/events.out.tfevents.%ld.", future + 1);
  assert_non_null(strstr(dt_tfevents_path(w), want));
  const char *tags[2] = {"steps/loss", "steps/lr"};
  const double values[2] = {2.5, 0.1};
  dt_tfevents_scalars(w, 12, 2, tags, values);
  char *path = dt_xstrdup(dt_tfevents_path(w));
  dt_tfevents_close(w);

  /* Three records (file_version, SessionLog START, the scalars), each framed by its length and
   * two masked CRC-32Cs, and nothing after them. */
  size_t n;
  uint8_t *buf = slurp(path, &n);
  size_t off = 0;
  int records = 0;
  while (off < n) {
    assert_true(off + 12 <= n);
    const uint64_t len = le64(buf + off);
    assert_int_equal(le32(buf + off + 8), dt_crc32c_mask(dt_crc32c(0, buf + off, 8)));
    assert_true(off + 16 + len <= n);
    assert_int_equal(le32(buf + off + 12 + len), dt_crc32c_mask(dt_crc32c(0, buf + off + 12, len)));
    if (records == 0) assert_true(holds(buf + off + 12, len, "brain.Event:2", 13));
    if (records == 1) /* step 7 (field 2 varint), session_log (field 7) { status START } */
      assert_true(holds(buf + off + 12, len, "\x10\x07\x3a\x02\x08\x01", 6));
    if (records == 2) {
      assert_true(holds(buf + off + 12, len, "steps/lr", 8));
      const float lr = 0.1f; /* simple_value: field 2, fixed32 */
      uint8_t v[5] = {0x15};
      memcpy(v + 1, &lr, 4);
      assert_true(holds(buf + off + 12, len, v, 5));
    }
    off += 16 + len;
    records++;
  }
  assert_int_equal(records, 3);
  free(buf);
  free(path);

  /* An unwritable directory (its parent is a file): NULL after a warning, no crash. */
  char bad[4300];
  snprintf(bad, sizeof bad, "%s/sub", old);
  assert_null(dt_tfevents_open(bad, 0));
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_refuse_mismatched_tables),
      cmocka_unit_test(test_refuse_future_version),
      cmocka_unit_test(test_seal),
      cmocka_unit_test(test_refuse_broken_files),
      cmocka_unit_test(test_algorithm_choices),
      cmocka_unit_test(test_refuse_bad_values),
      cmocka_unit_test(test_latest_prune_path),
      cmocka_unit_test(test_kill_during_save),
      cmocka_unit_test(test_metrics),
      cmocka_unit_test(test_tfevents),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
