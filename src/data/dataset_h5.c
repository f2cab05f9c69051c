/* dataset_h5.c: data.dataset = hdf5, a user's own images packed into one HDF5 file by
 * tools/dtrain_tools/pack_images.py (README "Your own data"), and the image files that
 * --predict reads. The dataset file holds
 *   /train/images  uint8 (N, C, H, W)      /train/labels  integers (N), in [0, K)
 *   /test/images   uint8 (M, C, H, W)      /test/labels   integers (M), in [0, K)
 *   /classes       K strings, the class names (label k is /classes[k])
 *   /mean, /std    floats (C): the per-channel normalisation, x = (pixel / 255 - mean) / std
 *   attribute default_hflip on / (integer, optional, 0 when absent): what augment.hflip = auto
 *   does
 * with 1 to 3 channels, 1 to DT_H5_MAX_CLASSES classes, every class present in the training
 * split. An image file for --predict holds /images uint8 (N, C, H, W) and optionally /names,
 * N strings. Anything else (a missing dataset, a wrong type or rank, counts that disagree, a
 * label out of range, an empty class) is DT_ERR_DATA with one message naming the file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "data/dataset.h"
#include "io/h5util.h"

/* What the packer writes; the README's layout. Helpers below name the file by `path`, a label
 * such as "dataset file data.h5" or "image file batch.h5". */
#define DT_H5_LAYOUT                                                                          \
  "a dataset file of tools/dtrain_tools/pack_images.py holds /train/images, /train/labels, " \
  "/test/images, /test/labels, /classes, /mean and /std"

#define DT_H5_IMAGES_LAYOUT \
  "an image file of tools/dtrain_tools/pack_images.py --predict-images holds /images and /names"

static const char *h5_class_name(H5T_class_t c) {
  switch (c) {
  case H5T_INTEGER: return "integer";
  case H5T_FLOAT: return "float";
  case H5T_STRING: return "string";
  case H5T_COMPOUND: return "compound";
  case H5T_ENUM: return "enum";
  default: return "non-numeric";
  }
}

/* "uint8", "int64", "float32", ... of a dataset's file type. */
static void h5_type_name(hid_t type, char *buf, size_t cap) {
  H5T_class_t c = H5Tget_class(type);
  size_t bits = 8 * H5Tget_size(type);
  if (c == H5T_INTEGER)
    snprintf(buf, cap, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
  else if (c == H5T_FLOAT)
    snprintf(buf, cap, "float%zu", bits);
  else
    snprintf(buf, cap, "%s", h5_class_name(c));
}

/* Open dataset `name` of file and check its rank; dims receives its extent. On failure the
 * message names `path` and the dataset. */
static dt_status h5_open_checked(const char *path, hid_t file, const char *name, int rank,
                                 hsize_t *dims, hid_t *out) {
  *out = H5I_INVALID_HID;
  /* H5Lexists needs every group on the way: "/train" before "/train/images". */
  htri_t exists = 1;
  const char *slash = strchr(name + 1, '/');
  if (slash) {
    char parent[64];
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - name), name);
    exists = H5Lexists(file, parent, H5P_DEFAULT);
  }
  if (exists > 0) exists = H5Lexists(file, name, H5P_DEFAULT);
  if (exists <= 0)
    return dt_error_set(DT_ERR_DATA, "%s: no dataset %s (%s)", path, name,
                        strncmp(name, "/images", 7) && strncmp(name, "/names", 6)
                            ? DT_H5_LAYOUT
                            : DT_H5_IMAGES_LAYOUT);
  hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  if (ds < 0)
    return dt_error_set(DT_ERR_DATA, "%s: %s is not a readable dataset", path, name);
  hid_t space = H5Dget_space(ds);
  int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  if (nd != rank) {
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    return dt_error_set(DT_ERR_DATA, "%s: %s has %d dimension(s), expected %d%s", path,
                        name, nd, rank, rank == 4 ? " (N, C, H, W)" : "");
  }
  H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  *out = ds;
  return DT_OK;
}

/* The file type of ds must be of class `want` (and for uint8 pixels, unsigned 8-bit). */
static dt_status h5_check_type(const char *path, hid_t ds, const char *name, H5T_class_t want,
                               bool uint8, const char *what) {
  hid_t type = H5Dget_type(ds);
  bool good = type >= 0 && H5Tget_class(type) == want;
  if (good && uint8) good = H5Tget_size(type) == 1 && H5Tget_sign(type) == H5T_SGN_NONE;
  char tname[32] = "unknown";
  if (type >= 0) h5_type_name(type, tname, sizeof tname);
  if (type >= 0) H5Tclose(type);
  if (!good)
    return dt_error_set(DT_ERR_DATA, "%s: %s is %s, expected %s", path, name, tname,
                        what);
  return DT_OK;
}

/* /<split>/images of (C, H, W) images: dims and, when pixels is not NULL, the pixels. */
static dt_status h5_read_images(const char *path, hid_t file, const char *name, hsize_t *dims,
                                uint8_t **pixels) {
  hid_t ds;
  dt_status st = h5_open_checked(path, file, name, 4, dims, &ds);
  if (st != DT_OK) return st;
  st = h5_check_type(path, ds, name, H5T_INTEGER, true, "uint8 pixels (N, C, H, W)");
  if (st == DT_OK && (dims[1] < 1 || dims[1] > 3))
    st = dt_error_set(DT_ERR_DATA,
                      "%s: %s has %llu channels (dimension 2 of N, C, H, W); dtrain "
                      "takes 1 (grey) to 3 (RGB)",
                      path, name, (unsigned long long)dims[1]);
  if (st == DT_OK && (dims[2] < 1 || dims[3] < 1 || dims[2] > 4096 || dims[3] > 4096))
    st = dt_error_set(DT_ERR_DATA, "%s: %s has images of %llux%llu pixels (1 to 4096 "
                      "per side)", path, name, (unsigned long long)dims[2],
                      (unsigned long long)dims[3]);
  if (st == DT_OK && (dims[0] < 1 || dims[0] > 100000000))
    st = dt_error_set(DT_ERR_DATA, "%s: %s holds %llu images (expected 1 to 100000000)",
                      path, name, (unsigned long long)dims[0]);
  if (st == DT_OK && pixels) {
    size_t bytes = (size_t)(dims[0] * dims[1] * dims[2] * dims[3]);
    *pixels = malloc(bytes);
    if (!*pixels)
      st = dt_error_set(DT_ERR_NOMEM, "%s: out of memory for %s (%zu bytes)", path,
                        name, bytes);
    else if (H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, *pixels) < 0) {
      free(*pixels);
      *pixels = NULL;
      st = dt_error_set(DT_ERR_DATA, "%s: cannot read %s (truncated or corrupt?)",
                        path, name);
    }
  }
  H5Dclose(ds);
  return st;
}

/* /<split>/labels: n integers, each in [0, classes); stored as uint8 class indices. */
static dt_status h5_read_labels(const char *path, hid_t file, const char *name, hsize_t n,
                                const char *images_name, int classes, uint8_t **labels) {
  hsize_t dims[1];
  hid_t ds;
  dt_status st = h5_open_checked(path, file, name, 1, dims, &ds);
  if (st != DT_OK) return st;
  st = h5_check_type(path, ds, name, H5T_INTEGER, false, "integer class indices");
  if (st == DT_OK && dims[0] != n)
    st = dt_error_set(DT_ERR_DATA, "%s: %s holds %llu images but %s %llu labels",
                      path, images_name, (unsigned long long)n, name,
                      (unsigned long long)dims[0]);
  int64_t *v = NULL;
  if (st == DT_OK) {
    v = malloc((size_t)n * sizeof *v);
    if (!v) st = dt_error_set(DT_ERR_NOMEM, "%s: out of memory for %s", path, name);
  }
  if (st == DT_OK && H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
    st = dt_error_set(DT_ERR_DATA, "%s: cannot read %s (truncated or corrupt?)", path,
                      name);
  H5Dclose(ds);
  for (hsize_t i = 0; st == DT_OK && i < n; i++)
    if (v[i] < 0 || v[i] >= classes)
      st = dt_error_set(DT_ERR_DATA,
                        "%s: %s: label %lld of image %llu is out of range (%d "
                        "classes in /classes: 0 to %d)",
                        path, name, (long long)v[i], (unsigned long long)i, classes, classes - 1);
  if (st == DT_OK) {
    *labels = dt_xmalloc((size_t)n);
    for (hsize_t i = 0; i < n; i++) (*labels)[i] = (uint8_t)v[i];
  }
  free(v);
  return st;
}

/* A 1-D string dataset (variable or fixed length): its count, and the strings when `out` is
 * not NULL (malloc'ed array of malloc'ed strings). */
static dt_status h5_read_strings(const char *path, hid_t file, const char *name, hsize_t *count,
                                 char ***out) {
  hsize_t dims[1];
  hid_t ds;
  dt_status st = h5_open_checked(path, file, name, 1, dims, &ds);
  if (st != DT_OK) return st;
  st = h5_check_type(path, ds, name, H5T_STRING, false, "strings");
  *count = dims[0];
  if (st != DT_OK || !out) {
    H5Dclose(ds);
    return st;
  }
  const size_t n = (size_t)dims[0];
  char **s = dt_xcalloc(DT_MAX(n, 1), sizeof *s);
  hid_t ftype = H5Dget_type(ds);
  hid_t mtype = H5Tcopy(H5T_C_S1);
  bool ok = ftype >= 0 && mtype >= 0;
  if (ok && H5Tis_variable_str(ftype) > 0) {
    char **raw = dt_xcalloc(DT_MAX(n, 1), sizeof *raw);
    ok = H5Tset_size(mtype, H5T_VARIABLE) >= 0 && H5Tset_cset(mtype, H5Tget_cset(ftype)) >= 0 &&
         H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0;
    for (size_t i = 0; ok && i < n; i++) s[i] = dt_xstrdup(raw[i] ? raw[i] : "");
    if (ok) {
      hid_t space = H5Dget_space(ds);
      H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, raw);
      H5Sclose(space);
    }
    free(raw);
  } else if (ok) {
    size_t len = H5Tget_size(ftype);
    char *buf = dt_xcalloc(n * (len + 1) + 1, 1);
    ok = H5Tset_size(mtype, len + 1) >= 0 && H5Tset_strpad(mtype, H5T_STR_NULLTERM) >= 0 &&
         H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
    for (size_t i = 0; ok && i < n; i++) s[i] = dt_xstrdup(buf + i * (len + 1));
    free(buf);
  }
  if (mtype >= 0) H5Tclose(mtype);
  if (ftype >= 0) H5Tclose(ftype);
  H5Dclose(ds);
  if (!ok) {
    for (size_t i = 0; i < n; i++) free(s[i]);
    free(s);
    return dt_error_set(DT_ERR_DATA, "%s: cannot read the strings of %s", path, name);
  }
  *out = s;
  return DT_OK;
}

/* /mean or /std: C finite floats (std > 0). */
static dt_status h5_read_stats(const char *path, hid_t file, const char *name, int C, bool positive,
                               float *out) {
  hsize_t dims[1];
  hid_t ds;
  dt_status st = h5_open_checked(path, file, name, 1, dims, &ds);
  if (st != DT_OK) return st;
  st = h5_check_type(path, ds, name, H5T_FLOAT, false, "floats, one per channel");
  if (st == DT_OK && dims[0] != (hsize_t)C)
    st = dt_error_set(DT_ERR_DATA, "%s: %s has %llu values but the images %d channel(s)",
                      path, name, (unsigned long long)dims[0], C);
  double v[3];
  if (st == DT_OK && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
    st = dt_error_set(DT_ERR_DATA, "%s: cannot read %s", path, name);
  H5Dclose(ds);
  for (int c = 0; st == DT_OK && c < C; c++) {
    if (!isfinite(v[c]) || (positive && v[c] <= 0))
      st = dt_error_set(DT_ERR_DATA, "%s: %s[%d] = %g (expected a finite%s value)",
                        path, name, c, v[c], positive ? " positive" : "");
    out[c] = (float)v[c];
  }
  return st;
}

/* Open path for reading; DT_ERR_DATA naming it when it is missing or not HDF5. */
static dt_status h5_check_open(const char *path, const char *what, hid_t *file) {
  struct stat sb;
  if (!path || !*path)
    return dt_error_set(DT_ERR_CONFIG,
                        "[data] dataset = hdf5 needs [data] path = FILE.h5, the file packed by "
                        "tools/dtrain_tools/pack_images.py");
  if (stat(path, &sb) != 0)
    return dt_error_set(DT_ERR_DATA, "%s %s: not found", what, path);
  if (!S_ISREG(sb.st_mode)) return dt_error_set(DT_ERR_DATA, "%s %s: not a regular file", what, path);
  if (H5Fis_hdf5(path) <= 0)
    return dt_error_set(DT_ERR_DATA, "%s %s: not an HDF5 file%s", what, path,
                        strcmp(what, "image file") == 0
                            ? " (convert images first: tools/dtrain-tool pack-images "
                              "--predict-images ...; README \"Your own data\")"
                            : "");
  *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (*file < 0) return dt_error_set(DT_ERR_DATA, "%s %s: cannot open as HDF5", what, path);
  return DT_OK;
}

/* h5_check_open with the HDF5 library's own error printing off (q) until h5_close_file; label
 * gets "WHAT PATH", the prefix of the messages about the file's contents. */
static dt_status h5_open_file(const char *path, const char *what, h5_quiet *q, hid_t *file,
                              char *label, size_t label_cap) {
  h5_quiet_begin(q);
  dt_status st = h5_check_open(path, what, file);
  if (st != DT_OK) {
    h5_quiet_end(q);
    return st;
  }
  snprintf(label, label_cap, "%s %s", what, path);
  return DT_OK;
}

static void h5_close_file(hid_t file, const h5_quiet *q) {
  H5Fclose(file);
  h5_quiet_end(q);
}

/* Everything of the file but the pixels and labels (those when `full`) and the class names
 * (those when `full` or `want_names`). */
static dt_status h5_dataset_read(const char *path, dt_dataset *ds, bool full, bool want_names) {
  memset(ds, 0, sizeof *ds);
  ds->name = "hdf5";
  h5_quiet q;
  hid_t file;
  char label[4200];
  dt_status st = h5_open_file(path, "dataset file", &q, &file, label, sizeof label);
  if (st != DT_OK) return st;
  hsize_t tr[4], te[4], K = 0;
  uint8_t *tr_px = NULL, *te_px = NULL;
  st = h5_read_images(label, file, "/train/images", tr, full ? &tr_px : NULL);
  if (st == DT_OK) st = h5_read_images(label, file, "/test/images", te, full ? &te_px : NULL);
  if (st == DT_OK && (tr[1] != te[1] || tr[2] != te[2] || tr[3] != te[3]))
    st = dt_error_set(DT_ERR_DATA,
                      "%s: /train/images are %llux%llux%llu (C x H x W) but "
                      "/test/images %llux%llux%llu",
                      label, (unsigned long long)tr[1], (unsigned long long)tr[2],
                      (unsigned long long)tr[3], (unsigned long long)te[1],
                      (unsigned long long)te[2], (unsigned long long)te[3]);
  char **names = NULL;
  if (st == DT_OK)
    st = h5_read_strings(label, file, "/classes", &K, full || want_names ? &names : NULL);
  if (st == DT_OK && (K < 1 || K > DT_H5_MAX_CLASSES))
    st = dt_error_set(DT_ERR_DATA, "%s: /classes names %llu classes (1 to %d)", label,
                      (unsigned long long)K, DT_H5_MAX_CLASSES);
  const int C = st == DT_OK ? (int)tr[1] : 0;
  if (st == DT_OK) st = h5_read_stats(label, file, "/mean", C, false, ds->mean);
  if (st == DT_OK) st = h5_read_stats(label, file, "/std", C, true, ds->std);
  if (st == DT_OK) {
    ds->default_hflip = false;
    if (H5Aexists(file, "default_hflip") > 0) {
      hid_t a = H5Aopen(file, "default_hflip", H5P_DEFAULT);
      int64_t v = 0;
      if (a < 0 || H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
        st = dt_error_set(DT_ERR_DATA, "%s: attribute default_hflip is not an integer",
                          label);
      if (a >= 0) H5Aclose(a);
      ds->default_hflip = v != 0;
    }
  }
  ds->classes = (int)K;
  for (int c = C; c < 3; c++) ds->mean[c] = 0.0f, ds->std[c] = 1.0f;
  dt_split *sp[2] = {&ds->train, &ds->test};
  const hsize_t *dims[2] = {tr, te};
  for (int s = 0; st == DT_OK && s < 2; s++) {
    sp[s]->count = full ? (int)dims[s][0] : 0;
    sp[s]->channels = C;
    sp[s]->height = (int)dims[s][2];
    sp[s]->width = (int)dims[s][3];
  }
  if (st == DT_OK && (full || want_names)) ds->class_names = names, names = NULL;
  if (st == DT_OK && full) {
    ds->train.images = tr_px, tr_px = NULL;
    ds->test.images = te_px, te_px = NULL;
    st = h5_read_labels(label, file, "/train/labels", tr[0], "/train/images", ds->classes,
                        &ds->train.labels);
    if (st == DT_OK)
      st = h5_read_labels(label, file, "/test/labels", te[0], "/test/images", ds->classes,
                          &ds->test.labels);
  }
  if (st == DT_OK && full) {
    /* Every class must be learnable: an empty one has no gradient signal and no accuracy. */
    int *seen = dt_xcalloc((size_t)ds->classes, sizeof *seen);
    for (int i = 0; i < ds->train.count; i++) seen[ds->train.labels[i]]++;
    for (int k = 0; st == DT_OK && k < ds->classes; k++)
      if (!seen[k])
        st = dt_error_set(DT_ERR_DATA,
                          "%s: class %d ('%s') has no training images in "
                          "/train/labels",
                          label, k, ds->class_names[k]);
    free(seen);
  }
  if (names)
    for (hsize_t k = 0; k < K; k++) free(names[k]);
  free(names);
  free(tr_px);
  free(te_px);
  h5_close_file(file, &q);
  if (st != DT_OK) dt_dataset_free(ds);
  else ds->name = "hdf5";
  return st;
}

dt_status dt_dataset_describe_hdf5(const char *path, dt_dataset *ds) {
  return h5_dataset_read(path, ds, false, false);
}

dt_status dt_dataset_names_hdf5(const char *path, dt_dataset *ds) {
  return h5_dataset_read(path, ds, false, true);
}

dt_status dt_dataset_load_hdf5(dt_dataset *ds, const char *path) {
  return h5_dataset_read(path, ds, true, true);
}

dt_status dt_images_load_hdf5(const char *path, dt_split *split, char ***names) {
  memset(split, 0, sizeof *split);
  *names = NULL;
  h5_quiet q;
  hid_t file;
  char label[4200];
  dt_status st = h5_open_file(path, "image file", &q, &file, label, sizeof label);
  if (st != DT_OK) return st;
  hsize_t dims[4], n_names = 0;
  uint8_t *px = NULL;
  st = h5_read_images(label, file, "/images", dims, &px);
  if (st == DT_OK && H5Lexists(file, "/names", H5P_DEFAULT) > 0) {
    st = h5_read_strings(label, file, "/names", &n_names, names);
    if (st == DT_OK && n_names != dims[0])
      st = dt_error_set(DT_ERR_DATA, "%s: /images holds %llu images but /names %llu names",
                        label, (unsigned long long)dims[0], (unsigned long long)n_names);
  }
  h5_close_file(file, &q);
  if (st != DT_OK) {
    free(px);
    if (*names)
      for (hsize_t i = 0; i < n_names; i++) free((*names)[i]);
    free(*names);
    *names = NULL;
    return st;
  }
  split->count = (int)dims[0];
  split->channels = (int)dims[1];
  split->height = (int)dims[2];
  split->width = (int)dims[3];
  split->images = px;
  split->labels = dt_xcalloc((size_t)dims[0], 1);
  return DT_OK;
}
