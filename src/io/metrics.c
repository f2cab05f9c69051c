/* metrics.c: the run's HDF5 metrics file (layout in metrics.h). Each column is a chunked,
 * extendible 1-d float64 dataset under /epoch or /steps, created on its first write. Rows are
 * buffered in memory and appended at each flush, with the file opened only for that flush,
 * so h5py or h5dump can read it while the run goes on. The writer opens the file without
 * HDF5's file lock, so a reader that keeps the file open does not make a flush fail. */
#include "io/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "io/h5util.h"
#include "io/tfevents.h"

#define DT_METRICS_FORMAT 1

typedef struct {
  const char *name;
  size_t offset; /* of the double in the row struct */
} column;

static const column k_epoch_cols[] = {
    {"epoch", offsetof(dt_epoch_row, epoch)},
    {"step", offsetof(dt_epoch_row, step)},
    {"lr", offsetof(dt_epoch_row, lr)},
    {"train_loss", offsetof(dt_epoch_row, train_loss)},
    {"train_top1", offsetof(dt_epoch_row, train_top1)},
    {"test_loss", offsetof(dt_epoch_row, test_loss)},
    {"test_top1", offsetof(dt_epoch_row, test_top1)},
    {"test_top5", offsetof(dt_epoch_row, test_top5)},
    {"seconds", offsetof(dt_epoch_row, seconds)},
    {"images_per_s", offsetof(dt_epoch_row, images_per_s)},
    {"loss_scale", offsetof(dt_epoch_row, loss_scale)},
    {"skipped_steps", offsetof(dt_epoch_row, skipped_steps)},
};

static const column k_step_cols[] = {
    {"step", offsetof(dt_step_row, step)},   {"epoch", offsetof(dt_step_row, epoch)},
    {"lr", offsetof(dt_step_row, lr)},       {"loss", offsetof(dt_step_row, loss)},
    {"top1", offsetof(dt_step_row, top1)},   {"images_per_s", offsetof(dt_step_row, images_per_s)},
    {"loss_scale", offsetof(dt_step_row, loss_scale)},
};

/* One table: its group, columns and the rows waiting for the next flush. */
typedef struct {
  const char *group;
  const column *cols;
  int n_cols;
  size_t row_size;
  hsize_t chunk;
  char *rows; /* n_rows * row_size bytes */
  size_t n_rows, cap;
} table;

struct dt_metrics {
  char *path;
  table epoch, steps;
  dt_tfevents *tb; /* NULL without output.tensorboard */
};

/* ---- HDF5 helpers ---- */

/* File access without file locking (see the top of the file); the caller closes it. */
static hid_t unlocked_fapl(void) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl >= 0 && H5Pset_file_locking(fapl, 0, 1) < 0) {
    H5Pclose(fapl);
    return H5I_INVALID_HID;
  }
  return fapl;
}

/* A variable-length string attribute. */
static herr_t write_attr_str(hid_t loc, const char *name, const char *value) {
  hid_t type = H5Tcopy(H5T_C_S1);
  if (type < 0) return -1;
  hid_t space = H5Screate(H5S_SCALAR);
  herr_t rc = -1;
  if (space >= 0 && H5Tset_size(type, H5T_VARIABLE) >= 0 &&
      H5Tset_cset(type, H5T_CSET_UTF8) >= 0) {
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, type, &value) >= 0) rc = 0;
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
  }
  if (space >= 0) H5Sclose(space);
  H5Tclose(type);
  return rc;
}

/* Open the group of t, creating it (with its `columns` attribute) if missing. */
static hid_t open_table_group(hid_t file, const table *t) {
  htri_t exists = H5Lexists(file, t->group, H5P_DEFAULT);
  if (exists < 0) return H5I_INVALID_HID;
  if (exists) return H5Gopen2(file, t->group, H5P_DEFAULT);
  hid_t g = H5Gcreate2(file, t->group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return g;
  /* Column order for readers, since HDF5 lists datasets alphabetically. */
  char names[256];
  size_t n = 0;
  names[0] = 0;
  for (int c = 0; c < t->n_cols; c++)
    n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", c ? "," : "", t->cols[c].name);
  if (write_attr_str(g, "columns", names) < 0) {
    H5Gclose(g);
    return H5I_INVALID_HID;
  }
  return g;
}

/* The failure of the metrics file: `what` went wrong. */
static dt_status metrics_error(const dt_metrics *m, const char *what) {
  return dt_error_set(DT_ERR_IO, "metrics file %s: %s", m->path, what);
}

/* Create a fresh file with the root attribute and both groups. */
static dt_status create_file(const dt_metrics *m) {
  hid_t fapl = unlocked_fapl();
  if (fapl < 0) return metrics_error(m, "file access properties");
  hid_t file = H5Fcreate(m->path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (file < 0) return metrics_error(m, "cannot create it");
  const char *what = NULL;
  if (h5_write_attr_i64(file, "format_version", DT_METRICS_FORMAT) < 0) what = "format_version";
  const table *ts[2] = {&m->epoch, &m->steps};
  for (int k = 0; k < 2 && !what; k++) {
    hid_t g = open_table_group(file, ts[k]);
    if (g < 0)
      what = ts[k]->group;
    else
      H5Gclose(g);
  }
  if (H5Fclose(file) < 0 && !what) what = "closing it";
  return what ? metrics_error(m, what) : DT_OK;
}

/* Append t's buffered rows to its column datasets (HDF5's convention: negative on failure). */
static herr_t append_rows(hid_t file, const table *t) {
  if (t->n_rows == 0) return 0;
  hid_t g = open_table_group(file, t);
  if (g < 0) return -1;
  double *col = dt_xmalloc(t->n_rows * sizeof *col);
  hsize_t k = t->n_rows;
  herr_t rc = 0;
  for (int c = 0; c < t->n_cols && rc == 0; c++) {
    for (size_t r = 0; r < t->n_rows; r++)
      memcpy(&col[r], t->rows + r * t->row_size + t->cols[c].offset, sizeof(double));
    rc = -1;
    hid_t ds = H5I_INVALID_HID, fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID;
    htri_t exists = H5Lexists(g, t->cols[c].name, H5P_DEFAULT);
    if (exists > 0) {
      ds = H5Dopen2(g, t->cols[c].name, H5P_DEFAULT);
    } else if (exists == 0) {
      hsize_t zero = 0, unlimited = H5S_UNLIMITED;
      hid_t space = H5Screate_simple(1, &zero, &unlimited);
      hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
      if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &t->chunk) >= 0)
        ds = H5Dcreate2(g, t->cols[c].name, H5T_IEEE_F64LE, space, H5P_DEFAULT, dcpl,
                        H5P_DEFAULT);
      if (dcpl >= 0) H5Pclose(dcpl);
      if (space >= 0) H5Sclose(space);
    }
    if (ds < 0) break;
    hsize_t n;
    fspace = H5Dget_space(ds);
    if (fspace >= 0 && H5Sget_simple_extent_dims(fspace, &n, NULL) == 1) {
      H5Sclose(fspace);
      hsize_t total = n + k;
      fspace = H5I_INVALID_HID;
      if (H5Dset_extent(ds, &total) >= 0 && (fspace = H5Dget_space(ds)) >= 0 &&
          H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &n, NULL, &k, NULL) >= 0 &&
          (mspace = H5Screate_simple(1, &k, NULL)) >= 0 &&
          H5Dwrite(ds, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, col) >= 0)
        rc = 0;
    }
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (H5Dclose(ds) < 0) rc = -1;
  }
  free(col);
  H5Gclose(g);
  return rc;
}

/* Drop the rows of t's columns whose step > resume_step. The rows are in step order; columns
 * of unequal length (a flush cut short) are cut to the shortest (HDF5's convention: negative
 * on failure). */
static herr_t truncate_table(hid_t file, const table *t, long resume_step) {
  htri_t exists = H5Lexists(file, t->group, H5P_DEFAULT);
  if (exists == 0) return 0;
  if (exists < 0) return -1;
  hid_t g = H5Gopen2(file, t->group, H5P_DEFAULT);
  if (g < 0) return -1;
  herr_t rc = 0;
  hid_t ds[16];
  hsize_t len[16], keep = (hsize_t)-1;
  for (int c = 0; c < t->n_cols; c++) {
    ds[c] = H5I_INVALID_HID;
    len[c] = 0;
    exists = H5Lexists(g, t->cols[c].name, H5P_DEFAULT);
    if (exists < 0) rc = -1;
    if (exists <= 0) continue;
    ds[c] = H5Dopen2(g, t->cols[c].name, H5P_DEFAULT);
    hid_t space = ds[c] >= 0 ? H5Dget_space(ds[c]) : H5I_INVALID_HID;
    if (space < 0 || H5Sget_simple_extent_dims(space, &len[c], NULL) != 1) rc = -1;
    if (space >= 0) H5Sclose(space);
  }
  /* A column missing while others exist means nothing can be trusted past row 0. */
  for (int c = 0; c < t->n_cols; c++) keep = DT_MIN(keep, len[c]);
  int step_col = -1;
  for (int c = 0; c < t->n_cols; c++)
    if (strcmp(t->cols[c].name, "step") == 0) step_col = c;
  if (rc == 0 && keep > 0 && ds[step_col] >= 0) {
    double *steps = dt_xmalloc((size_t)len[step_col] * sizeof *steps);
    if (H5Dread(ds[step_col], H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps) < 0) {
      rc = -1;
    } else {
      for (hsize_t r = 0; r < keep; r++)
        if (steps[r] > (double)resume_step) {
          keep = r;
          break;
        }
    }
    free(steps);
  }
  for (int c = 0; c < t->n_cols; c++) {
    if (ds[c] < 0) continue;
    if (rc == 0 && len[c] != keep && H5Dset_extent(ds[c], &keep) < 0) rc = -1;
    H5Dclose(ds[c]);
  }
  H5Gclose(g);
  return rc;
}

/* ---- public ---- */

static void table_init(table *t, const char *group, const column *cols, int n_cols,
                       size_t row_size, hsize_t chunk) {
  memset(t, 0, sizeof *t);
  t->group = group;
  t->cols = cols;
  t->n_cols = n_cols;
  t->row_size = row_size;
  t->chunk = chunk;
}

static void table_push(table *t, const void *row) {
  if (t->n_rows == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 64;
    t->rows = realloc(t->rows, t->cap * t->row_size);
    DT_CHECK(t->rows != NULL);
  }
  memcpy(t->rows + t->n_rows * t->row_size, row, t->row_size);
  t->n_rows++;
}

dt_status dt_metrics_open(dt_metrics **out, const char *path, long resume_step) {
  *out = NULL;
  dt_metrics *m = dt_xcalloc(1, sizeof *m);
  m->path = dt_xstrdup(path);
  table_init(&m->epoch, "epoch", k_epoch_cols, (int)DT_ARRAY_LEN(k_epoch_cols),
             sizeof(dt_epoch_row), 64);
  table_init(&m->steps, "steps", k_step_cols, (int)DT_ARRAY_LEN(k_step_cols),
             sizeof(dt_step_row), 1024);

  h5_quiet q;
  h5_quiet_begin(&q);
  const char *what = NULL;
  dt_status st = DT_OK;
  if (resume_step >= 0 && access(path, F_OK) == 0) {
    hid_t fapl = unlocked_fapl();
    hid_t file = fapl >= 0 ? H5Fopen(path, H5F_ACC_RDWR, fapl) : H5I_INVALID_HID;
    if (fapl >= 0) H5Pclose(fapl);
    if (file < 0) {
      what = "cannot reopen it to resume (not an HDF5 file, or not writable?)";
    } else {
      if (truncate_table(file, &m->epoch, resume_step) < 0 ||
          truncate_table(file, &m->steps, resume_step) < 0)
        what = "cannot drop the rows after the resumed step (corrupt?)";
      if (H5Fclose(file) < 0 && !what) what = "cannot close it";
    }
    if (what) st = metrics_error(m, what);
  } else {
    st = create_file(m);
  }
  h5_quiet_end(&q);
  if (st != DT_OK) {
    dt_metrics_close(m);
    return st;
  }
  *out = m;
  return DT_OK;
}

/* The row of t as TensorBoard scalars at its step: every column but `step`, tagged
 * <group>/<column>. */
static void tensorboard_row(dt_metrics *m, const table *t, const void *row) {
  if (!m->tb) return;
  const char *tags[16];
  char names[16][48];
  double values[16], step = 0;
  int n = 0;
  for (int c = 0; c < t->n_cols; c++) {
    double v;
    memcpy(&v, (const char *)row + t->cols[c].offset, sizeof v);
    if (strcmp(t->cols[c].name, "step") == 0) {
      step = v;
      continue;
    }
    snprintf(names[n], sizeof names[n], "%s/%s", t->group, t->cols[c].name);
    tags[n] = names[n];
    values[n++] = v;
  }
  dt_tfevents_scalars(m->tb, (long)step, n, tags, values);
}

void dt_metrics_step(dt_metrics *m, const dt_step_row *row) {
  table_push(&m->steps, row);
  tensorboard_row(m, &m->steps, row);
}

/* Append every buffered row; on failure the rows stay buffered for the next try. */
static dt_status flush_rows(dt_metrics *m) {
  if (m->epoch.n_rows == 0 && m->steps.n_rows == 0) return DT_OK;
  h5_quiet q;
  h5_quiet_begin(&q);
  const char *what = NULL;
  dt_status st = access(m->path, F_OK) != 0 ? create_file(m) : DT_OK;
  hid_t file = H5I_INVALID_HID;
  if (st == DT_OK) {
    hid_t fapl = unlocked_fapl();
    file = fapl >= 0 ? H5Fopen(m->path, H5F_ACC_RDWR, fapl) : H5I_INVALID_HID;
    if (fapl >= 0) H5Pclose(fapl);
    if (file < 0) what = "cannot open it for appending";
  }
  if (st == DT_OK && !what &&
      (append_rows(file, &m->steps) < 0 || append_rows(file, &m->epoch) < 0))
    what = "appending rows failed (disk full?)";
  if (file >= 0 && H5Fclose(file) < 0 && !what) what = "closing it failed (disk full?)";
  h5_quiet_end(&q);
  if (what) st = metrics_error(m, what);
  if (st == DT_OK) {
    m->epoch.n_rows = 0;
    m->steps.n_rows = 0;
  }
  return st;
}

dt_status dt_metrics_flush(dt_metrics *m) { return flush_rows(m); }

dt_status dt_metrics_epoch(dt_metrics *m, const dt_epoch_row *row) {
  table_push(&m->epoch, row);
  tensorboard_row(m, &m->epoch, row);
  return dt_metrics_flush(m);
}

void dt_metrics_close(dt_metrics *m) {
  if (!m) return;
  /* Best effort for step rows logged after the last epoch; callers that need the status
   * call dt_metrics_flush first. */
  if (flush_rows(m) != DT_OK)
    fprintf(stderr, "dtrain: warning: metrics file %s: the last %zu step rows were not written\n",
            m->path, m->steps.n_rows);
  dt_tfevents_close(m->tb);
  free(m->epoch.rows);
  free(m->steps.rows);
  free(m->path);
  free(m);
}

void dt_metrics_tensorboard(dt_metrics *m, const char *dir, long resume_step) {
  if (resume_step < 0) {
    /* A fresh run in a directory used before (output.overwrite): the old curves would mix in. */
    DIR *dp = opendir(dir);
    const struct dirent *e;
    while (dp && (e = readdir(dp)) != NULL) {
      if (strncmp(e->d_name, "events.out.tfevents.", 20) != 0) continue;
      char file[4500];
      snprintf(file, sizeof file, "%s/%s", dir, e->d_name);
      unlink(file);
    }
    if (dp) closedir(dp);
  }
  dt_tfevents_close(m->tb);
  m->tb = dt_tfevents_open(dir, resume_step < 0 ? 0 : resume_step + 1);
}

bool dt_metrics_has_images(const dt_metrics *m) { return m && m->tb; }

void dt_metrics_image(dt_metrics *m, const char *tag, long step, const uint8_t *png, size_t len,
                      int width, int height) {
  if (!m || !m->tb) return;
  dt_tfevents_image(m->tb, tag, step, png, len, width, height, 3);
}
