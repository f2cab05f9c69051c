/* checkpoint.c: HDF5 checkpoints of the parameter table, optimizer state and run metadata
 * (layout in checkpoint.h). Saving writes a temporary file beside the target, fsyncs it and
 * renames it over the final name; loading reads and checks everything into scratch arenas
 * and copies to the caller only once the whole file has been validated. A seal (a whole-file
 * CRC-32 in HDF5's user block) is checked before HDF5 parses the file at all. HDF5's own error
 * stack printing is switched off inside these functions so the user sees one message. */
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>
#include <math.h>
#include <zlib.h>

#include "io/atomic.h"
#include "io/h5util.h"

/* Checksums are taken over the tensors' bytes in memory, which are the file's float32
 * little-endian bytes only on a little-endian host. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint checksums assume a little-endian host"
#endif

/* What follows the target's name in the name of a save's temporary file. */
#define PARTIAL_MARK ".tmp."

/* ---- HDF5 helpers ---- */

static void h5_close_group(hid_t *g) {
  if (*g >= 0) H5Gclose(*g);
  *g = H5I_INVALID_HID;
}

/* Variable-length UTF-8 string type (h5py reads it as str); the caller closes it. */
static hid_t h5_vlen_str_type(void) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return t;
  if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
    H5Tclose(t);
    return H5I_INVALID_HID;
  }
  return t;
}

/* "(a,b,c)" */
static void fmt_shape(char *out, size_t size, int ndim, const hsize_t *dims) {
  size_t n = (size_t)snprintf(out, size, "(");
  for (int d = 0; d < ndim && n < size; d++)
    n += (size_t)snprintf(out + n, size - n, "%s%llu", d ? "," : "", (unsigned long long)dims[d]);
  if (n < size) snprintf(out + n, size - n, ")");
}

/* The checksum of a tensor: zlib's CRC-32 of its n float32 values as little-endian bytes.
 * CRC-32 rather than a faster hash because zlib is linked already (gzip datasets), its
 * implementation is tested and runs at gigabytes per second, and it detects every error burst
 * of up to 32 bits and any other corruption with probability 1 - 2^-32, which is what a
 * checkpoint needs (it guards against damage, not against forgery). */
static uint32_t tensor_crc(const float *x, size_t n) {
  return (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), (const Bytef *)x, n * sizeof(float));
}

/* Objects are created without modification times, so that the same state always writes the
 * same bytes (a checkpoint is reproducible byte for byte, and comparable with cmp). */
static hid_t untimed_plist(hid_t cls) {
  hid_t pl = H5Pcreate(cls);
  if (pl >= 0 && H5Pset_obj_track_times(pl, false) < 0) {
    H5Pclose(pl);
    return H5I_INVALID_HID;
  }
  return pl;
}

static hid_t create_dataset(hid_t loc, const char *name, hid_t type, hid_t space) {
  hid_t dcpl = untimed_plist(H5P_DATASET_CREATE);
  if (dcpl < 0) return H5I_INVALID_HID;
  hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  return ds;
}

static hid_t create_group(hid_t loc, const char *name) {
  hid_t gcpl = untimed_plist(H5P_GROUP_CREATE);
  if (gcpl < 0) return H5I_INVALID_HID;
  hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
  H5Pclose(gcpl);
  return g;
}

/* Write a float32 dataset of the given logical shape under loc, with its checksum as the
 * attribute crc32 (HDF5's convention: negative on failure, h5util.h). */
static herr_t write_f32(hid_t loc, const char *name, int ndim, const int *dims, const float *data) {
  hsize_t hd[4];
  size_t n = 1;
  for (int d = 0; d < ndim; d++) hd[d] = (hsize_t)dims[d], n *= (size_t)dims[d];
  hid_t space = H5Screate_simple(ndim, hd, NULL);
  if (space < 0) return -1;
  hid_t ds = create_dataset(loc, name, H5T_IEEE_F32LE, space);
  herr_t rc = -1;
  if (ds >= 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0 &&
      h5_write_attr_i64(ds, "crc32", tensor_crc(data, n)) >= 0)
    rc = 0;
  if (ds >= 0 && H5Dclose(ds) < 0) rc = -1;
  H5Sclose(space);
  return rc;
}

/* A scalar string as an attribute (is_dataset 0) or a dataset (1) of loc (HDF5's convention). */
static herr_t write_str(hid_t loc, const char *name, const char *value, int is_dataset) {
  hid_t type = h5_vlen_str_type();
  if (type < 0) return -1;
  hid_t space = H5Screate(H5S_SCALAR);
  herr_t rc = -1;
  if (space >= 0) {
    if (is_dataset) {
      hid_t ds = create_dataset(loc, name, type, space);
      if (ds >= 0 && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) >= 0) rc = 0;
      if (ds >= 0 && H5Dclose(ds) < 0) rc = -1;
    } else {
      hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
      if (a >= 0 && H5Awrite(a, type, &value) >= 0) rc = 0;
      if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    }
    H5Sclose(space);
  }
  H5Tclose(type);
  return rc;
}

/* Read a scalar attribute of class cls (H5T_INTEGER, H5T_FLOAT) as mem_type. 1 if absent, -1
 * if unreadable or of another class, 0 ok. */
static int read_scalar_attr(hid_t loc, const char *name, H5T_class_t cls, hid_t mem_type,
                            void *out) {
  htri_t exists = H5Aexists(loc, name);
  if (exists == 0) return 1;
  if (exists < 0) return -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return -1;
  int rc = -1;
  hid_t type = H5Aget_type(a);
  hid_t space = H5Aget_space(a);
  if (type >= 0 && space >= 0 && H5Tget_class(type) == cls &&
      H5Sget_simple_extent_npoints(space) == 1 && H5Aread(a, mem_type, out) >= 0)
    rc = 0;
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  H5Aclose(a);
  return rc;
}

static int read_attr_i64(hid_t loc, const char *name, int64_t *out) {
  return read_scalar_attr(loc, name, H5T_INTEGER, H5T_NATIVE_INT64, out);
}

/* Read a scalar string, variable- or fixed-length, from attribute (is_dataset 0) or dataset
 * (1) `name` of loc into a malloc'ed string. 1 if absent, -1 if unreadable, 0 ok. */
static int read_str(hid_t loc, const char *name, int is_dataset, char **out) {
  htri_t exists = is_dataset ? H5Lexists(loc, name, H5P_DEFAULT) : H5Aexists(loc, name);
  if (exists == 0) return 1;
  if (exists < 0) return -1;
  hid_t obj = is_dataset ? H5Dopen2(loc, name, H5P_DEFAULT) : H5Aopen(loc, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  hid_t ftype = is_dataset ? H5Dget_type(obj) : H5Aget_type(obj);
  hid_t space = is_dataset ? H5Dget_space(obj) : H5Aget_space(obj);
  hid_t mtype = H5I_INVALID_HID;
  int rc = -1;
  if (ftype < 0 || space < 0 || H5Tget_class(ftype) != H5T_STRING ||
      H5Sget_simple_extent_npoints(space) != 1)
    goto done;
  if (H5Tis_variable_str(ftype) > 0) {
    mtype = h5_vlen_str_type();
    char *s = NULL;
    if (mtype < 0) goto done;
    herr_t r = is_dataset ? H5Dread(obj, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s)
                          : H5Aread(obj, mtype, &s);
    if (r < 0) goto done;
    *out = dt_xstrdup(s ? s : "");
    if (s) H5free_memory(s);
    rc = 0;
  } else {
    size_t n = H5Tget_size(ftype);
    if (n == 0) goto done;
    mtype = H5Tcopy(H5T_C_S1);
    if (mtype < 0 || H5Tset_size(mtype, n + 1) < 0 || H5Tset_strpad(mtype, H5T_STR_NULLTERM) < 0)
      goto done;
    char *buf = dt_xcalloc(n + 1, 1);
    herr_t r = is_dataset ? H5Dread(obj, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf)
                          : H5Aread(obj, mtype, buf);
    if (r < 0) {
      free(buf);
      goto done;
    }
    *out = buf;
    rc = 0;
  }
done:
  if (mtype >= 0) H5Tclose(mtype);
  if (space >= 0) H5Sclose(space);
  if (ftype >= 0) H5Tclose(ftype);
  if (is_dataset)
    H5Dclose(obj);
  else
    H5Aclose(obj);
  return rc;
}

/* ---- save ---- */

/* Split path into its directory ("." when it has none) and base name. */
static void split_path(const char *path, char *dir, size_t dsize, const char **base) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(dir, dsize, ".");
    *base = path;
  } else if (slash == path) {
    snprintf(dir, dsize, "/");
    *base = slash + 1;
  } else {
    snprintf(dir, dsize, "%.*s", (int)(slash - path), path);
    *base = slash + 1;
  }
}

/* ---- the seal: a whole-file checksum in HDF5's user block ----
 * Layout of the DT_CHECKPOINT_USERBLOCK bytes in front of HDF5's superblock (little-endian):
 *   0  char[18]  "DTRAIN-CHECKPOINT\0"
 *  18  u32       header version (1)
 *  22  u64       the file's length in bytes
 *  30  u32       zlib CRC-32 of every byte after the user block
 *  34  zeros
 * It is checked with stdio before HDF5 sees the file, so that no corruption of HDF5's own
 * metadata reaches the HDF5 library (which can crash on some). */
static const char seal_magic[18] = "DTRAIN-CHECKPOINT";
static const unsigned char hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
#define SEAL_VERSION 1u
#define SEAL_HEADER 34

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* CRC-32 of f's bytes from offset `from` to its end, and how many bytes it has in all; -1 on
 * a read error (errno set). */
static int crc_after(FILE *f, long from, uint32_t *crc, uint64_t *length) {
  if (fseek(f, from, SEEK_SET) != 0) return -1;
  unsigned char buf[1 << 16];
  uLong c = crc32_z(0L, Z_NULL, 0);
  uint64_t n = (uint64_t)from;
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
    c = crc32_z(c, buf, got);
    n += got;
  }
  if (ferror(f)) return -1;
  *crc = (uint32_t)c;
  *length = n;
  return 0;
}

dt_status dt_checkpoint_seal(const char *path) {
  errno = 0;
  FILE *f = fopen(path, "r+b");
  if (!f)
    return dt_error_set(DT_ERR_IO, "checkpoint %s: cannot open to seal: %s", path,
                        strerror(errno));
  unsigned char head[DT_CHECKPOINT_USERBLOCK];
  size_t got = fread(head, 1, sizeof head, f);
  uint32_t crc;
  uint64_t length;
  const char *why = NULL;
  int e = 0;
  if (got < sizeof head || memcmp(head, hdf5_signature, sizeof hdf5_signature) == 0)
    why = "it has no user block to hold the seal (not written by this dtrain)";
  else if (crc_after(f, DT_CHECKPOINT_USERBLOCK, &crc, &length) < 0) {
    e = errno;
    why = "reading it failed";
  }
  if (!why) {
    memset(head, 0, sizeof head);
    memcpy(head, seal_magic, sizeof seal_magic);
    put_le(head + 18, SEAL_VERSION, 4);
    put_le(head + 22, length, 8);
    put_le(head + 30, crc, 4);
    if (fseek(f, 0, SEEK_SET) != 0 || fwrite(head, 1, SEAL_HEADER, f) != SEAL_HEADER) {
      e = errno;
      why = "writing its header failed";
    }
  }
  if (fclose(f) != 0 && !why) {
    e = errno;
    why = "writing its header failed";
  }
  if (why)
    return dt_error_set(DT_ERR_IO, "checkpoint %s: cannot seal: %s%s%s", path, why,
                        e ? ": " : "", e ? strerror(e) : "");
  return DT_OK;
}

/* Check the seal of the file at path before HDF5 opens it. A file of an older dtrain without
 * one (it starts with the HDF5 signature) passes as it is; anything else that does not check
 * is DT_ERR_DATA naming the file. */
static dt_status check_seal(const char *path) {
  errno = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot open: %s", path, strerror(errno));
  unsigned char head[SEAL_HEADER];
  size_t got = fread(head, 1, sizeof head, f);
  if (got >= sizeof hdf5_signature && memcmp(head, hdf5_signature, sizeof hdf5_signature) == 0) {
    fclose(f);
    return DT_OK;
  }
  if (got < sizeof head || memcmp(head, seal_magic, sizeof seal_magic) != 0 ||
      get_le(head + 18, 4) != SEAL_VERSION) {
    fclose(f);
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: not a readable HDF5 checkpoint (truncated or corrupt?): "
                        "it starts with neither dtrain's checksum header nor the HDF5 signature",
                        path);
  }
  uint64_t want_len = get_le(head + 22, 8), len;
  uint32_t want_crc = (uint32_t)get_le(head + 30, 4), crc;
  int rc = crc_after(f, DT_CHECKPOINT_USERBLOCK, &crc, &len);
  int e = errno;
  fclose(f);
  if (rc < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot read: %s", path, strerror(e));
  if (len != want_len)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: the file's checksum does not match (truncated or "
                        "corrupt): it holds %" PRIu64 " bytes, its header says %" PRIu64,
                        path, len, want_len);
  if (crc != want_crc)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: the file's checksum does not match (truncated or "
                        "corrupt): CRC-32 %08" PRIx32 " of its contents, %08" PRIx32
                        " in its header",
                        path, crc, want_crc);
  return DT_OK;
}

/* /backend/conv_algorithms: n rows of DT_CHECKPOINT_ALGO_COLS int32 (HDF5's convention), with
 * the attribute `deterministic` (0 / 1). */
static herr_t write_algos(hid_t file, const int32_t *rows, size_t n, int deterministic) {
  hid_t g = create_group(file, "backend");
  if (g < 0) return -1;
  const hsize_t dims[2] = {n, DT_CHECKPOINT_ALGO_COLS};
  hid_t space = H5Screate_simple(2, dims, NULL);
  hid_t ds = space < 0 ? -1
                       : create_dataset(g, "conv_algorithms", H5T_STD_I32LE, space);
  herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows);
  if (rc >= 0) rc = h5_write_attr_i64(ds, "deterministic", deterministic != 0);
  if (ds >= 0) H5Dclose(ds);
  if (space >= 0) H5Sclose(space);
  H5Gclose(g);
  return rc < 0 ? -1 : 0;
}

/* Read /backend/conv_algorithms if present (a file without it: none). */
static dt_status load_algos(const char *path, hid_t file, dt_checkpoint_meta *m) {
  m->algos = NULL;
  m->n_algos = 0;
  m->algos_deterministic = -1;
  if (H5Lexists(file, "backend", H5P_DEFAULT) <= 0 ||
      H5Lexists(file, "backend/conv_algorithms", H5P_DEFAULT) <= 0)
    return DT_OK;
  hid_t ds = H5Dopen2(file, "backend/conv_algorithms", H5P_DEFAULT);
  if (ds < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: /backend/conv_algorithms is not a dataset",
                        path);
  hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
  hsize_t dims[2] = {0, 0};
  const int ndim = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
  if (ndim == 2) H5Sget_simple_extent_dims(space, dims, NULL);
  const bool ok = ndim == 2 && dims[1] == DT_CHECKPOINT_ALGO_COLS && dims[0] <= 100000 &&
                  type >= 0 && H5Tget_class(type) == H5T_INTEGER;
  dt_status st = DT_OK;
  if (!ok) {
    st = dt_error_set(DT_ERR_DATA, "checkpoint %s: /backend/conv_algorithms is not an integer "
                      "table of %d columns", path, DT_CHECKPOINT_ALGO_COLS);
  } else if (dims[0] > 0) {
    m->algos = dt_xmalloc((size_t)dims[0] * DT_CHECKPOINT_ALGO_COLS * sizeof(int32_t));
    if (H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, m->algos) < 0) {
      free(m->algos);
      m->algos = NULL;
      st = dt_error_set(DT_ERR_DATA, "checkpoint %s: /backend/conv_algorithms is unreadable",
                        path);
    } else {
      m->n_algos = (size_t)dims[0];
    }
  }
  int64_t det = -1;
  const int rc_det = st == DT_OK ? read_attr_i64(ds, "deterministic", &det) : 1;
  if (rc_det < 0 || (rc_det == 0 && det != 0 && det != 1))
    st = dt_error_set(DT_ERR_DATA, "checkpoint %s: /backend/conv_algorithms has an invalid "
                      "`deterministic` attribute (0 or 1 expected)", path);
  else if (rc_det == 0)
    m->algos_deterministic = (int)det;
  if (st != DT_OK) {
    free(m->algos);
    m->algos = NULL;
    m->n_algos = 0;
  }
  if (type >= 0) H5Tclose(type);
  if (space >= 0) H5Sclose(space);
  H5Dclose(ds);
  return st;
}

/* Write everything into the open file `file` (the temporary file tmp of checkpoint path) and
 * close it; the message names what could not be written. */
static dt_status save_contents(const char *path, const char *tmp, hid_t file, const dt_params *ps,
                               const float *weights, const float *buffers,
                               const dt_optim_state *opt, const dt_checkpoint_meta *meta,
                               bool fault_kill) {
  const char *what = NULL;
  hid_t model = H5I_INVALID_HID, optg = H5I_INVALID_HID, stateg = H5I_INVALID_HID;

  model = create_group(file, "model");
  if (model < 0) {
    what = "/model";
    goto done;
  }
  int half = (ps->count + 1) / 2;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    const float *src = ((p->flags & DT_PARAM_BUFFER) ? buffers : weights) + p->offset;
    if (write_f32(model, p->name, p->ndim, p->dims, src) < 0) {
      what = "a model tensor";
      goto done;
    }
    if (fault_kill && i + 1 == half) {
      /* Test hook: leave a partial temporary file on disk, then die like a killed job. */
      H5Fflush(file, H5F_SCOPE_GLOBAL);
      raise(SIGKILL);
    }
  }

  if (opt && opt->n_states > 0) {
    optg = create_group(file, "optimizer");
    if (optg < 0) {
      what = "/optimizer";
      goto done;
    }
    for (int s = 0; s < opt->n_states; s++) {
      stateg = create_group(optg, opt->names[s]);
      if (stateg < 0) {
        what = "an optimizer state group";
        goto done;
      }
      for (int i = 0; i < ps->count; i++) {
        const dt_param *p = &ps->items[i];
        if (p->flags & DT_PARAM_BUFFER) continue;
        if (write_f32(stateg, p->name, p->ndim, p->dims, opt->arrays[s] + p->offset) < 0) {
          what = "an optimizer state tensor";
          goto done;
        }
      }
      h5_close_group(&stateg);
    }
  }

  dt_checkpoint_meta none = {.world_size = 1, .loss_scale = 1};
  if (!meta) meta = &none;
  char created[32];
  /* SOURCE_DATE_EPOCH (the reproducible-builds convention) fixes the time stamp, which is then
   * the only part of a checkpoint that depends on when it was written. */
  const char *epoch_env = getenv("SOURCE_DATE_EPOCH");
  char *end = NULL;
  long long fixed = epoch_env ? strtoll(epoch_env, &end, 10) : -1;
  time_t now = epoch_env && end != epoch_env && *end == '\0' && fixed >= 0 ? (time_t)fixed : time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (h5_write_attr_i64(file, "format_version", DT_CHECKPOINT_FORMAT) < 0 ||
      h5_write_attr_i64(file, "epoch", meta->epoch) < 0 ||
      h5_write_attr_i64(file, "step", meta->step) < 0 ||
      h5_write_attr_i64(file, "step_in_epoch", meta->step_in_epoch) < 0 ||
      h5_write_attr_i64(file, "optimizer_steps", meta->optimizer_steps) < 0 ||
      h5_write_attr_i64(file, "world_size", meta->world_size) < 0 ||
      h5_write_attr_i64(file, "seed", meta->seed) < 0 ||
      h5_write_attr_f64(file, "loss_scale", meta->loss_scale) < 0 ||
      h5_write_attr_i64(file, "loss_scale_good_steps", meta->loss_scale_good) < 0 ||
      h5_write_attr_f64(file, "epoch_loss_sum", meta->epoch_sums[0]) < 0 ||
      h5_write_attr_f64(file, "epoch_correct", meta->epoch_sums[1]) < 0 ||
      h5_write_attr_f64(file, "epoch_images", meta->epoch_sums[2]) < 0 ||
      h5_write_attr_f64(file, "window_loss_sum", meta->window_sums[0]) < 0 ||
      h5_write_attr_f64(file, "window_correct", meta->window_sums[1]) < 0 ||
      h5_write_attr_f64(file, "window_images", meta->window_sums[2]) < 0 ||
      h5_write_attr_i64(file, "epoch_skipped_steps", meta->epoch_skipped) < 0 ||
      write_str(file, "model", meta->model, 0) < 0 || write_str(file, "created", created, 0) < 0) {
    what = "the attributes";
    goto done;
  }
  if (write_str(file, "config", meta->config_text ? meta->config_text : "", 1) < 0) {
    what = "/config";
    goto done;
  }
  if (meta->n_algos > 0 && write_algos(file, meta->algos, meta->n_algos, meta->algos_deterministic) < 0) {
    what = "/backend/conv_algorithms";
    goto done;
  }
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) what = "the file (flush)";
done:
  h5_close_group(&stateg);
  h5_close_group(&optg);
  h5_close_group(&model);
  errno = 0;
  herr_t closed = H5Fclose(file);
  int e = errno;
  if (!what && closed >= 0) return DT_OK;
  return dt_error_set(DT_ERR_IO, "checkpoint %s: writing %s to %s failed%s%s", path,
                      what ? what : "the file (close)", tmp, e ? ": " : "",
                      e ? strerror(e) : " (disk full?)");
}

dt_status dt_checkpoint_save(const char *path, const dt_params *ps, const float *weights,
                             const float *buffers, const dt_optim_state *opt,
                             const dt_checkpoint_meta *meta) {
  DT_CHECK(weights != NULL && (buffers != NULL || ps->n_buffers == 0));
  char dir[DT_PATH_MAX], tmp[DT_PATH_MAX];
  const char *base;
  split_path(path, dir, sizeof dir, &base);
  if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s" PARTIAL_MARK "%ld", dir, base, (long)getpid()) >=
      sizeof tmp)
    return dt_error_set(DT_ERR_IO, "checkpoint %s: path too long", path);
  const char *fault = getenv("DTRAIN_FAULT_CHECKPOINT");
  bool fault_kill = fault && strcmp(fault, "kill") == 0;

  h5_quiet q;
  h5_quiet_begin(&q);
  errno = 0;
  hid_t fcpl = untimed_plist(H5P_FILE_CREATE); /* the root group's times too */
  hid_t file = fcpl >= 0 && H5Pset_userblock(fcpl, DT_CHECKPOINT_USERBLOCK) >= 0
                   ? H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT)
                   : H5I_INVALID_HID;
  if (fcpl >= 0) H5Pclose(fcpl);
  if (file < 0) {
    int e = errno;
    h5_quiet_end(&q);
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "checkpoint %s: cannot create temporary file %s: %s", path, tmp,
                        e ? strerror(e) : "HDF5 error");
  }
  dt_status st = save_contents(path, tmp, file, ps, weights, buffers, opt, meta, fault_kill);
  h5_quiet_end(&q);
  if (st != DT_OK) {
    unlink(tmp);
    return st;
  }
  /* The seal goes into the closed file, before the fsync that makes it durable. */
  if (dt_checkpoint_seal(tmp) != DT_OK) {
    char why[512];
    snprintf(why, sizeof why, "%s", dt_error_message());
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "checkpoint %s: %s", path, why);
  }
  char label[DT_PATH_MAX + 16];
  snprintf(label, sizeof label, "checkpoint %s", path);
  return dt_atomic_replace(tmp, path, label);
}

/* ---- load ---- */

/* Scratch copies of everything the caller asked for; committed only after every check. */
typedef struct {
  float *weights, *buffers;
  float *states[4];
  dt_checkpoint_meta meta;
} load_scratch;

static void load_scratch_free(load_scratch *s) {
  free(s->weights);
  free(s->buffers);
  for (int k = 0; k < 4; k++) free(s->states[k]);
  free(s->meta.config_text);
  free(s->meta.algos);
}

/* An entry of /model or /optimizer must be data stored in this file: a soft link could alias
 * another tensor, an external link would read another file (whatever its path names then). */
static dt_status require_hard_link(const char *path, hid_t loc, const char *name,
                                   const char *shown) {
  H5L_info_t info;
  if (H5Lget_info(loc, name, &info, H5P_DEFAULT) < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: %s is unreadable (corrupt?)", path, shown);
  if (info.type == H5L_TYPE_HARD) return DT_OK;
  return dt_error_set(DT_ERR_DATA,
                      "checkpoint %s: %s is %s, not data stored in the checkpoint; refusing it",
                      path, shown,
                      info.type == H5L_TYPE_SOFT       ? "a soft link"
                      : info.type == H5L_TYPE_EXTERNAL ? "an external link (to another file)"
                                                       : "a user-defined link");
}

/* The values of a tensor read from the file: the checksum (format 2 on: required), finite
 * values, and no negative running variance. */
static dt_status check_values(const char *path, hid_t ds, int version, const char *where,
                              const dt_param *p, const float *x) {
  if (version >= 2) {
    int64_t crc;
    int rc = read_attr_i64(ds, "crc32", &crc);
    if (rc != 0)
      return dt_error_set(DT_ERR_DATA, "checkpoint %s: %s%s has %s checksum (attribute crc32)",
                          path, where, p->name, rc > 0 ? "no" : "an unreadable");
    uint32_t have = tensor_crc(x, p->count);
    if (crc != (int64_t)have)
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: %s%s: checksum mismatch (crc32 %08" PRIx64
                          " in the file, %08" PRIx32 " of the data): the file is corrupt",
                          path, where, p->name, (uint64_t)crc, have);
  }
  size_t len = strlen(p->name);
  const bool variance = len >= 12 && strcmp(p->name + len - 12, ".running_var") == 0;
  for (size_t j = 0; j < p->count; j++) {
    if (!isfinite(x[j]))
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: %s%s holds a non-finite value (%s at index %zu)", path,
                          where, p->name, isnan(x[j]) ? "NaN" : x[j] > 0 ? "inf" : "-inf", j);
    if (variance && x[j] < 0)
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: %s%s holds a negative variance (%g at index %zu)", path,
                          where, p->name, (double)x[j], j);
  }
  return DT_OK;
}

/* Check that `name` under loc is a float dataset shaped like p, stored in the file, and read
 * it into dst with its values checked (NULL: check the shape only). `where` prefixes the
 * tensor name in messages ("" or "optimizer state x/"). */
static dt_status load_tensor(const char *path, hid_t loc, int version, const char *where,
                             const dt_param *p, float *dst) {
  htri_t exists = H5Lexists(loc, p->name, H5P_DEFAULT);
  if (exists <= 0)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: %s%s is missing from the file — a checkpoint of another "
                        "model%s?",
                        path, where, p->name, *where ? ", or saved without optimizer state" : "");
  char shown[320];
  snprintf(shown, sizeof shown, "%s%s", where, p->name);
  dt_status st = require_hard_link(path, loc, p->name, shown);
  if (st != DT_OK) return st;
  hid_t ds = H5Dopen2(loc, p->name, H5P_DEFAULT);
  if (ds < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: %s%s is not a dataset", path, where, p->name);
  hid_t type = H5Dget_type(ds);
  hid_t space = H5Dget_space(ds);
  if (type < 0 || space < 0 || H5Tget_class(type) != H5T_FLOAT) {
    st = dt_error_set(DT_ERR_DATA, "checkpoint %s: %s%s is not a float tensor", path, where,
                      p->name);
    goto done;
  }
  int ndim = H5Sget_simple_extent_ndims(space);
  hsize_t fdims[H5S_MAX_RANK], mdims[4];
  for (int d = 0; d < p->ndim; d++) mdims[d] = (hsize_t)p->dims[d];
  bool same = ndim == p->ndim;
  if (ndim < 0 || ndim > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, fdims, NULL) < 0) {
    st = dt_error_set(DT_ERR_DATA, "checkpoint %s: %s%s has an unreadable shape", path, where,
                      p->name);
    goto done;
  }
  for (int d = 0; same && d < ndim; d++) same = fdims[d] == mdims[d];
  if (!same) {
    char fs[128], ms[128];
    fmt_shape(fs, sizeof fs, ndim, fdims);
    fmt_shape(ms, sizeof ms, p->ndim, mdims);
    st = dt_error_set(DT_ERR_DATA, "checkpoint %s: %s%s: shape %s in the file, %s in the model",
                      path, where, p->name, fs, ms);
    goto done;
  }
  if (dst && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
    st = dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot read %s%s (truncated or corrupt?)", path,
                      where, p->name);
  else if (dst)
    st = check_values(path, ds, version, where, p, dst);
done:
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  H5Dclose(ds);
  return st;
}

/* Every entry of /model must be a tensor of the table. */
static dt_status check_no_extra(const char *path, hid_t model, const dt_params *ps) {
  H5G_info_t info;
  if (H5Gget_info(model, &info) < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot list /model (corrupt?)", path);
  for (hsize_t k = 0; k < info.nlinks; k++) {
    char name[256];
    if (H5Lget_name_by_idx(model, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name,
                           H5P_DEFAULT) < 0)
      return dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot list /model (corrupt?)", path);
    if (dt_params_find(ps, name) < 0)
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: the file has tensor %s that the model lacks — a "
                          "checkpoint of another model?",
                          path, name);
  }
  return DT_OK;
}

/* A float64 attribute of the root, or an error naming it. */
static dt_status read_meta_f64(const char *path, hid_t file, const char *name, double *out) {
  int rc = read_scalar_attr(file, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, out);
  if (rc != 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: attribute %s is %s", path, name,
                        rc > 0 ? "missing" : "not a readable number");
  return DT_OK;
}

/* Meta attributes, each checked against the range it can have in any run. */
static dt_status load_meta(const char *path, hid_t file, int version, dt_checkpoint_meta *m) {
  static const char *const names[] = {"epoch",      "step", "step_in_epoch", "optimizer_steps",
                                      "world_size", "seed"};
  int64_t v[6];
  for (size_t k = 0; k < DT_ARRAY_LEN(names); k++) {
    int rc = read_attr_i64(file, names[k], &v[k]);
    if (rc != 0)
      return dt_error_set(DT_ERR_DATA, "checkpoint %s: attribute %s is %s", path, names[k],
                          rc > 0 ? "missing" : "not a readable integer");
  }
  /* The ranges: config.h's train.epochs, train.max_steps, train.seed; any world size an int
   * holds. */
  const int64_t limits[6] = {1000000, 1000000000000L, 1000000000000L, 1000000000000L, INT_MAX,
                             4611686018427387903L};
  for (size_t k = 0; k < DT_ARRAY_LEN(names); k++) {
    int64_t lo = k == 4 ? 1 : 0;
    if (v[k] < lo || v[k] > limits[k])
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: attribute %s = %" PRId64 " is out of range [%" PRId64
                          ", %" PRId64 "] (corrupt?)",
                          path, names[k], v[k], lo, limits[k]);
  }
  if (v[2] > v[1] || v[3] > v[1])
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: %s = %" PRId64 " exceeds step = %" PRId64 " (corrupt?)",
                        path, v[2] > v[1] ? "step_in_epoch" : "optimizer_steps",
                        v[2] > v[1] ? v[2] : v[3], v[1]);
  m->epoch = (long)v[0];
  m->step = (long)v[1];
  m->step_in_epoch = (long)v[2];
  m->optimizer_steps = (long)v[3];
  m->world_size = (int)v[4];
  m->seed = (long)v[5];
  m->format_version = version;
  char *s = NULL;
  int rc = read_str(file, "model", 0, &s);
  if (rc != 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: attribute model is %s", path,
                        rc > 0 ? "missing" : "not a readable string");
  snprintf(m->model, sizeof m->model, "%s", s);
  free(s);
  /* Loss scaling came after format 1's first files: absent there means unknown (0). */
  int64_t good = 0;
  m->loss_scale = 0;
  rc = read_scalar_attr(file, "loss_scale", H5T_FLOAT, H5T_NATIVE_DOUBLE, &m->loss_scale);
  int rc_good = read_attr_i64(file, "loss_scale_good_steps", &good);
  if (rc < 0 || rc_good < 0 || (version >= 2 && (rc > 0 || rc_good > 0)))
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: attribute loss_scale or "
                        "loss_scale_good_steps is %s", path,
                        rc < 0 || rc_good < 0 ? "not a readable number" : "missing");
  if (!isfinite(m->loss_scale) || m->loss_scale < 0 || (version >= 2 && m->loss_scale == 0) ||
      good < 0 || good > 1000000000)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: loss_scale = %g with %" PRId64 " good steps is out of "
                        "range (a finite positive scale, good steps in [0, 1000000000])",
                        path, m->loss_scale, good);
  m->loss_scale_good = (long)good;
  if (version >= 2) {
    static const char *const sums[] = {"epoch_loss_sum",  "epoch_correct",  "epoch_images",
                                       "window_loss_sum", "window_correct", "window_images"};
    double x[6];
    for (int k = 0; k < 6; k++) {
      dt_status st = read_meta_f64(path, file, sums[k], &x[k]);
      if (st != DT_OK) return st;
      if (!isfinite(x[k]) || x[k] < 0)
        return dt_error_set(DT_ERR_DATA,
                            "checkpoint %s: attribute %s = %g is not a finite sum >= 0", path,
                            sums[k], x[k]);
    }
    /* Accuracy counts at most every image; the window is part of the epoch. */
    if (x[1] > x[2] || x[4] > x[5] || x[5] > x[2])
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: epoch metrics correct %g of %g images, window correct "
                          "%g of %g images are inconsistent (corrupt?)",
                          path, x[1], x[2], x[4], x[5]);
    int64_t skipped;
    rc = read_attr_i64(file, "epoch_skipped_steps", &skipped);
    if (rc != 0)
      return dt_error_set(DT_ERR_DATA, "checkpoint %s: attribute epoch_skipped_steps is %s", path,
                          rc > 0 ? "missing" : "not a readable integer");
    if (skipped < 0 || skipped > v[2])
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: epoch_skipped_steps = %" PRId64 " is out of range [0, "
                          "step_in_epoch = %" PRId64 "]",
                          path, skipped, v[2]);
    for (int k = 0; k < 3; k++) m->epoch_sums[k] = x[k], m->window_sums[k] = x[3 + k];
    m->epoch_skipped = (long)skipped;
  }
  rc = read_str(file, "config", 1, &m->config_text);
  if (rc != 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: /config is %s", path,
                        rc > 0 ? "missing" : "not a readable string");
  return load_algos(path, file, m);
}

/* All checks and reads on the open file, into s. */
static dt_status load_contents(const char *path, hid_t file, const dt_params *ps, load_scratch *s,
                               bool want_buffers, const dt_optim_state *opt, bool want_meta) {
  int64_t version;
  int rc = read_attr_i64(file, "format_version", &version);
  if (rc != 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: %s", path,
                        rc > 0 ? "no format_version attribute: not a dtrain checkpoint"
                               : "unreadable format_version attribute (corrupt?)");
  if (version > DT_CHECKPOINT_FORMAT)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: written by a newer dtrain (format %" PRId64
                        ", this one reads up to %d)",
                        path, version, DT_CHECKPOINT_FORMAT);
  if (version < 1)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: invalid format_version %" PRId64, path,
                        version);

  if (H5Lexists(file, "model", H5P_DEFAULT) <= 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: no /model group: not a dtrain checkpoint",
                        path);
  dt_status st = require_hard_link(path, file, "model", "/model");
  if (st != DT_OK) return st;
  hid_t model = H5Gopen2(file, "model", H5P_DEFAULT);
  if (model < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: /model is not a group", path);
  for (int i = 0; i < ps->count && st == DT_OK; i++) {
    const dt_param *p = &ps->items[i];
    float *dst = (p->flags & DT_PARAM_BUFFER) ? (want_buffers ? s->buffers + p->offset : NULL)
                                              : s->weights + p->offset;
    st = load_tensor(path, model, (int)version, "", p, dst);
  }
  if (st == DT_OK) st = check_no_extra(path, model, ps);
  H5Gclose(model);
  if (st != DT_OK) return st;

  for (int k = 0; opt && k < opt->n_states; k++) {
    char where[96];
    snprintf(where, sizeof where, "optimizer state %s/", opt->names[k]);
    char gpath[160];
    snprintf(gpath, sizeof gpath, "optimizer/%s", opt->names[k]);
    if (H5Lexists(file, "optimizer", H5P_DEFAULT) <= 0)
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: the file holds no optimizer state (saved for weights "
                          "only?)",
                          path);
    st = require_hard_link(path, file, "optimizer", "/optimizer");
    if (st != DT_OK) return st;
    if (H5Lexists(file, gpath, H5P_DEFAULT) <= 0)
      return dt_error_set(DT_ERR_DATA,
                          "checkpoint %s: optimizer state %s is missing from the file (saved "
                          "with another optimizer?)",
                          path, opt->names[k]);
    char shown[170];
    snprintf(shown, sizeof shown, "/%s", gpath);
    st = require_hard_link(path, file, gpath, shown);
    if (st != DT_OK) return st;
    hid_t g = H5Gopen2(file, gpath, H5P_DEFAULT);
    if (g < 0)
      return dt_error_set(DT_ERR_DATA, "checkpoint %s: /%s is not a group", path, gpath);
    for (int i = 0; i < ps->count && st == DT_OK; i++) {
      const dt_param *p = &ps->items[i];
      if (p->flags & DT_PARAM_BUFFER) continue;
      st = load_tensor(path, g, (int)version, where, p, s->states[k] + p->offset);
    }
    H5Gclose(g);
    if (st != DT_OK) return st;
  }
  if (want_meta) return load_meta(path, file, (int)version, &s->meta);
  return DT_OK;
}

dt_status dt_checkpoint_load(const char *path, const dt_params *ps, float *weights,
                             float *buffers, dt_optim_state *opt, dt_checkpoint_meta *meta) {
  DT_CHECK(weights != NULL && (!opt || (opt->n_states >= 0 && opt->n_states <= 4)));
  struct stat sb;
  if (stat(path, &sb) < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot open: %s", path, strerror(errno));
  if (!S_ISREG(sb.st_mode))
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: not a regular file", path);

  dt_status sealed = check_seal(path);
  if (sealed != DT_OK) return sealed;

  h5_quiet q;
  h5_quiet_begin(&q);
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) {
    h5_quiet_end(&q);
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: not a readable HDF5 checkpoint (truncated or corrupt?)",
                        path);
  }
  load_scratch s = {0};
  s.weights = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  if (buffers) s.buffers = dt_xmalloc(DT_MAX(ps->n_buffers, 1) * sizeof(float));
  for (int k = 0; opt && k < opt->n_states; k++)
    s.states[k] = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  dt_status st = load_contents(path, file, ps, &s, buffers != NULL, opt, meta != NULL);
  H5Fclose(file);
  h5_quiet_end(&q);
  if (st != DT_OK) {
    load_scratch_free(&s);
    return st;
  }

  /* Everything checked: copy tensor by tensor, leaving the arenas' alignment padding alone. */
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    size_t bytes = p->count * sizeof(float);
    if (p->flags & DT_PARAM_BUFFER) {
      if (buffers) memcpy(buffers + p->offset, s.buffers + p->offset, bytes);
      continue;
    }
    memcpy(weights + p->offset, s.weights + p->offset, bytes);
    for (int k = 0; opt && k < opt->n_states; k++)
      memcpy(opt->arrays[k] + p->offset, s.states[k] + p->offset, bytes);
  }
  if (meta) {
    *meta = s.meta;
    s.meta.config_text = NULL;
    s.meta.algos = NULL;
  }
  load_scratch_free(&s);
  return DT_OK;
}

dt_status dt_checkpoint_read_config(const char *path, char **text) {
  *text = NULL;
  struct stat sb;
  if (stat(path, &sb) < 0)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: cannot open: %s", path, strerror(errno));
  if (!S_ISREG(sb.st_mode))
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: not a regular file", path);
  dt_status st = check_seal(path);
  if (st != DT_OK) return st;
  h5_quiet q;
  h5_quiet_begin(&q);
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  int rc = file < 0 ? -1 : read_str(file, "config", 1, text);
  if (file >= 0) H5Fclose(file);
  h5_quiet_end(&q);
  if (file < 0)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: not a readable HDF5 checkpoint (truncated or corrupt?)",
                        path);
  if (rc != 0 || !**text) {
    free(*text);
    *text = NULL;
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: /config is %s", path,
                        rc > 0 ? "missing" : rc < 0 ? "unreadable" : "empty");
  }
  return DT_OK;
}

/* ---- the checkpoints directory ---- */

/* Step of a "step_<digits>.h5" name, or -1 for anything else (temporary files included).
 * The one parser of checkpoint names (dt_checkpoint_path writes them). */
static long parse_step_name(const char *name) {
  if (strncmp(name, "step_", 5) != 0) return -1;
  const char *d = name + 5;
  if (*d < '0' || *d > '9') return -1;
  char *end;
  errno = 0;
  long step = strtol(d, &end, 10);
  if (errno || strcmp(end, ".h5") != 0) return -1;
  return step;
}

/* A temporary file that a save killed before its rename left behind:
 * ".step_<digits>.h5" PARTIAL_MARK "<pid>" (dt_checkpoint_save). */
static bool is_partial_name(const char *name) {
  return strncmp(name, ".step_", 6) == 0 && strstr(name, ".h5" PARTIAL_MARK) != NULL;
}

typedef struct {
  long step;
  char name[256];
} ckpt_entry;

/* Every step_*.h5 of run_dir/checkpoints (malloc'ed, unsorted) and their count *n (0 and an
 * error when the directory cannot be read). */
static dt_status list_checkpoints(const char *run_dir, ckpt_entry **out, int *n_out) {
  char dir[DT_PATH_MAX];
  snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
  *out = NULL;
  *n_out = 0;
  DIR *dp = opendir(dir);
  if (!dp)
    return dt_error_set(DT_ERR_DATA, "run directory %s: cannot read %s: %s", run_dir, dir,
                        strerror(errno));
  int n = 0, cap = 0;
  ckpt_entry *list = NULL;
  struct dirent *e;
  while ((e = readdir(dp)) != NULL) {
    long step = parse_step_name(e->d_name);
    if (step < 0 || strlen(e->d_name) >= sizeof list->name) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      list = realloc(list, (size_t)cap * sizeof *list);
      DT_CHECK(list != NULL);
    }
    list[n].step = step;
    snprintf(list[n].name, sizeof list[n].name, "%s", e->d_name);
    n++;
  }
  closedir(dp);
  *out = list;
  *n_out = n;
  return DT_OK;
}

dt_status dt_checkpoint_latest(const char *run_dir, char *out, size_t size) {
  ckpt_entry *list;
  int n;
  list_checkpoints(run_dir, &list, &n); /* an unreadable directory has none: said below */
  int best = -1;
  for (int i = 0; i < n; i++)
    if (best < 0 || list[i].step > list[best].step) best = i;
  if (best < 0) {
    free(list);
    return dt_error_set(DT_ERR_DATA, "run directory %s: no checkpoint in %s/checkpoints", run_dir,
                        run_dir);
  }
  int w = snprintf(out, size, "%s/checkpoints/%s", run_dir, list[best].name);
  free(list);
  if (w < 0 || (size_t)w >= size)
    return dt_error_set(DT_ERR_DATA, "run directory %s: checkpoint path too long", run_dir);
  return DT_OK;
}

void dt_checkpoint_path(const char *run_dir, long step, char *out, size_t size) {
  char dir[DT_PATH_MAX];
  snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
  /* An existing directory is the normal case; a real failure surfaces when saving. */
  mkdir(dir, 0777);
  snprintf(out, size, "%s/step_%09ld.h5", dir, step);
}

static int cmp_step_desc(const void *a, const void *b) {
  long x = ((const ckpt_entry *)a)->step, y = ((const ckpt_entry *)b)->step;
  return (x < y) - (x > y);
}

void dt_checkpoint_prune(const char *run_dir, int keep_last) {
  if (keep_last <= 0) return;
  ckpt_entry *list;
  int n;
  if (list_checkpoints(run_dir, &list, &n) != DT_OK) return; /* nothing to prune */
  if (n > keep_last) {
    qsort(list, (size_t)n, sizeof *list, cmp_step_desc);
    for (int i = keep_last; i < n; i++) {
      char path[DT_PATH_MAX];
      if ((size_t)snprintf(path, sizeof path, "%s/checkpoints/%s", run_dir, list[i].name) <
          sizeof path)
        unlink(path);
    }
  }
  free(list);
}

void dt_checkpoint_remove(const char *run_dir, bool partial_only) {
  char path[DT_PATH_MAX];
  snprintf(path, sizeof path, "%s/checkpoints", run_dir);
  DIR *dp = opendir(path);
  if (!dp) return;
  const struct dirent *e;
  while ((e = readdir(dp)) != NULL) {
    const char *name = e->d_name;
    const bool partial = is_partial_name(name);
    if (!partial && (partial_only || parse_step_name(name) < 0)) continue;
    char file[DT_PATH_MAX + 256];
    snprintf(file, sizeof file, "%s/%s", path, name);
    unlink(file);
  }
  closedir(dp);
}
