/* fuzz_checkpoint.c: libFuzzer harness of checkpoint loading (src/io/checkpoint.c), structure
 * aware. A valid checkpoint of a small parameter table (a conv, a batch norm and a linear
 * layer, one optimizer state) is written once with dt_checkpoint_save; each input is a list
 * of edits applied to a copy of it through the HDF5 API (attributes set to other values,
 * types or strings, or removed; tensor elements overwritten with any bits; tensors removed,
 * reshaped, retyped, replaced by links or groups; /config replaced), and the result is loaded
 * as --resume loads a checkpoint, resealed (checkpoint.h) so that it gets past the whole-file
 * checksum. Mutating HDF5's own bytes is fuzz_checkpoint_raw's job; here every input reaches
 * dtrain's checks of a well-formed file.
 * Properties: a refused file leaves a message and the outputs untouched, and no load leaves
 * an HDF5 object open. Values that load but are out of range are visible with
 * DT_FUZZ_REPORT=1 (DT_FUZZ_REPORT=all: every file, with the refusal); the loader's range checks are
 * not this harness's to assert. */
#define _GNU_SOURCE
#include <hdf5.h>
#include <math.h>

#include "fuzz_ckpt_table.h"
#include "fuzz_util.h"
#include "io/checkpoint.h"


static dt_params g_ps;
static uint8_t *g_template;
static size_t g_template_len;

static const char *const g_attrs[] = {"format_version", "epoch", "step", "step_in_epoch",
                                      "optimizer_steps", "world_size", "seed", "loss_scale",
                                      "loss_scale_good_steps", "model", "created"};
#define N_ATTRS (sizeof g_attrs / sizeof g_attrs[0])

/* The template: a checkpoint as training writes one (step 12 of a 2-rank run). */
static void write_template(const char *path) {
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
  if (dt_checkpoint_save(path, &g_ps, w, b, &opt, &meta) != DT_OK) {
    fprintf(stderr, "fuzz_checkpoint: writing the template: %s\n", dt_error_message());
    exit(1);
  }
  free(w);
  free(b);
  free(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_ckpt_table(&g_ps); /* host arrays only: no backend, no dt_params_alloc */
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  char path[256];
  fuzz_path(path, sizeof path, "template.h5");
  write_template(path);
  FILE *f = fopen(path, "rb");
  if (!f || fseek(f, 0, SEEK_END) != 0) abort();
  g_template_len = (size_t)ftell(f);
  rewind(f);
  g_template = malloc(g_template_len);
  if (fread(g_template, 1, g_template_len, f) != g_template_len) abort();
  fclose(f);
  return 0;
}

/* ---- reading the edit list ---- */

typedef struct {
  const uint8_t *p;
  size_t left;
} reader;

static uint8_t rd_u8(reader *r) {
  if (!r->left) return 0;
  r->left--;
  return *r->p++;
}

static void rd_bytes(reader *r, void *out, size_t n) {
  memset(out, 0, n);
  size_t k = n < r->left ? n : r->left;
  memcpy(out, r->p, k);
  r->p += k;
  r->left -= k;
}

/* A tensor path: /model/<name> or /optimizer/momentum/<name> of a table entry. */
static void rd_tensor(reader *r, char *path, size_t cap) {
  uint8_t b = rd_u8(r);
  const dt_param *p = &g_ps.items[(b & 0x7f) % g_ps.count];
  if ((b & 0x80) && !(p->flags & DT_PARAM_BUFFER))
    snprintf(path, cap, "/optimizer/momentum/%s", p->name);
  else
    snprintf(path, cap, "/model/%s", p->name);
}

/* A short name from the input (at most 15 bytes, no '/' or NUL). */
static void rd_name(reader *r, char *name) {
  size_t n = rd_u8(r) % 16;
  rd_bytes(r, name, n);
  name[n] = 0;
  for (size_t i = 0; i < n; i++)
    if (name[i] == '/' || name[i] == 0) name[i] = '_';
  if (!n) strcpy(name, "x");
}

static void set_attr(hid_t file, const char *name, hid_t type, const void *value) {
  if (H5Aexists(file, name) > 0) H5Adelete(file, name);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (a >= 0) {
    H5Awrite(a, type, value);
    H5Aclose(a);
  }
  H5Sclose(space);
}

static void set_attr_str(hid_t file, const char *name, const char *s) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, strlen(s) + 1);
  set_attr(file, name, type, s);
  H5Tclose(type);
}

/* A new dataset at path (replacing what is there) of a shape and type from the input. */
static void replace_dataset(hid_t file, const char *path, reader *r) {
  H5Ldelete(file, path, H5P_DEFAULT);
  int ndim = rd_u8(r) % 5;
  hsize_t dims[4];
  for (int d = 0; d < ndim; d++) dims[d] = rd_u8(r) % 12;
  static const hid_t *types[] = {&H5T_NATIVE_FLOAT_g, &H5T_NATIVE_DOUBLE_g, &H5T_NATIVE_INT_g,
                                 &H5T_NATIVE_UCHAR_g};
  hid_t type = *types[rd_u8(r) % 4];
  hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
  hid_t d = H5Dcreate2(file, path, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (d >= 0) {
    hssize_t n = H5Sget_simple_extent_npoints(space);
    size_t bytes = (size_t)(n > 0 ? n : 1) * H5Tget_size(type);
    uint8_t *buf = malloc(bytes);
    rd_bytes(r, buf, bytes);
    H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    free(buf);
    H5Dclose(d);
  }
  H5Sclose(space);
}

/* Overwrite one float element of the tensor at path with bits from the input. */
static void poke_element(hid_t file, const char *path, reader *r) {
  hid_t d = H5Dopen2(file, path, H5P_DEFAULT);
  if (d < 0) return;
  hid_t space = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(space);
  hid_t type = H5Dget_type(d);
  if (n > 0 && n < 4096 && H5Tget_class(type) == H5T_FLOAT) {
    float *buf = malloc((size_t)n * sizeof(float));
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) {
      size_t at = rd_u8(r) % (size_t)n;
      rd_bytes(r, &buf[at], sizeof(float));
      H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    }
    free(buf);
  }
  H5Tclose(type);
  H5Sclose(space);
  H5Dclose(d);
}

static void apply_edits(hid_t file, reader *r) {
  char path[256], name[16], other[256];
  for (int op_count = 0; r->left && op_count < 16; op_count++) {
    uint8_t op = rd_u8(r) % 11;
    switch (op) {
    case 0: { /* integer attribute */
      int64_t v;
      const char *a = g_attrs[rd_u8(r) % N_ATTRS];
      rd_bytes(r, &v, sizeof v);
      set_attr(file, a, H5T_NATIVE_INT64, &v);
      break;
    }
    case 1: { /* float attribute (any bits: NaN, inf, negative) */
      double v;
      const char *a = g_attrs[rd_u8(r) % N_ATTRS];
      rd_bytes(r, &v, sizeof v);
      set_attr(file, a, H5T_NATIVE_DOUBLE, &v);
      break;
    }
    case 2: { /* string attribute */
      const char *a = g_attrs[rd_u8(r) % N_ATTRS];
      size_t n = rd_u8(r);
      char s[256];
      rd_bytes(r, s, n);
      s[n] = 0;
      set_attr_str(file, a, s);
      break;
    }
    case 3: H5Adelete(file, g_attrs[rd_u8(r) % N_ATTRS]); break;
    case 4: /* one tensor element */
      rd_tensor(r, path, sizeof path);
      poke_element(file, path, r);
      break;
    case 5:
      rd_tensor(r, path, sizeof path);
      H5Ldelete(file, path, H5P_DEFAULT);
      break;
    case 6:
      rd_tensor(r, path, sizeof path);
      replace_dataset(file, path, r);
      break;
    case 7: { /* a link in place of a tensor: soft, external, or a hard link to another */
      rd_tensor(r, path, sizeof path);
      uint8_t kind = rd_u8(r) % 3;
      rd_tensor(r, other, sizeof other);
      H5Ldelete(file, path, H5P_DEFAULT);
      if (kind == 0) H5Lcreate_soft(other, file, path, H5P_DEFAULT, H5P_DEFAULT);
      if (kind == 1) { /* into the template: another, valid file */
        char target[256];
        fuzz_path(target, sizeof target, "template.h5");
        H5Lcreate_external(target, other, file, path, H5P_DEFAULT, H5P_DEFAULT);
      }
      if (kind == 2) H5Lcreate_hard(file, other, file, path, H5P_DEFAULT, H5P_DEFAULT);
      break;
    }
    case 8: { /* an extra object under /model or /optimizer */
      rd_name(r, name);
      uint8_t where = rd_u8(r);
      snprintf(path, sizeof path, "%s/%s", where & 1 ? "/optimizer" : "/model", name);
      if (where & 2) {
        hid_t g = H5Gcreate2(file, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
      } else {
        replace_dataset(file, path, r);
      }
      break;
    }
    case 9: /* /config as another dataset */
      replace_dataset(file, "/config", r);
      break;
    case 10: { /* a tensor replaced by a group */
      rd_tensor(r, path, sizeof path);
      H5Ldelete(file, path, H5P_DEFAULT);
      hid_t g = H5Gcreate2(file, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      if (g >= 0) H5Gclose(g);
      break;
    }
    }
  }
}

static int all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

/* DT_FUZZ_REPORT=1: a load that passed with values out of range (all: every accepted load). */
static void report_accepted(const dt_checkpoint_meta *meta, const float *w, const float *b,
                            const float *m) {
  const char *report = getenv("DT_FUZZ_REPORT");
  const int finite[3] = {all_finite(w, g_ps.n_weights), all_finite(b, g_ps.n_buffers),
                         all_finite(m, g_ps.n_weights)};
  if (report && (strcmp(report, "all") == 0 || meta->step < 0 || meta->epoch < 0 ||
                 meta->step_in_epoch < 0 || meta->world_size <= 0 ||
                 !(meta->loss_scale >= 0 && meta->loss_scale < INFINITY) || !finite[0] ||
                 !finite[1] || !finite[2]))
    fprintf(stderr, "fuzz_checkpoint: accepted: step %ld epoch %ld step_in_epoch %ld "
            "world_size %d loss_scale %g, tensors finite: %d %d %d\n",
            meta->step, meta->epoch, meta->step_in_epoch, meta->world_size, meta->loss_scale,
            finite[0], finite[1], finite[2]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[256];
  fuzz_write("ckpt.h5", g_template, g_template_len);
  fuzz_path(path, sizeof path, "ckpt.h5");
  hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  if (file < 0) abort();
  reader r = {data, size};
  apply_edits(file, &r);
  if (H5Fclose(file) < 0) abort();
  /* The edits are the input: reseal the file so that the load gets past the whole-file
   * checksum to the checks of its contents. */
  if (dt_checkpoint_seal(path) != DT_OK) abort();
  if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) {
    fprintf(stderr, "fuzz_checkpoint: the harness left an HDF5 object open\n");
    abort();
  }

  fuzz_ckpt_load(path, &g_ps, report_accepted);
  return 0;
}
