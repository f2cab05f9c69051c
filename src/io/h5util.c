/* h5util.c: HDF5 helpers shared by the checkpoint and metrics writers. */
#include "io/h5util.h"

void h5_init(void) { H5dont_atexit(); }

void h5_quiet_begin(h5_quiet *q) {
  H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5_quiet_end(const h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

static herr_t write_scalar_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                                const void *value) {
  hid_t space = H5Screate(H5S_SCALAR);
  if (space < 0) return -1;
  hid_t a = H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
  herr_t rc = -1;
  if (a >= 0 && H5Awrite(a, mem_type, value) >= 0) rc = 0;
  if (a >= 0 && H5Aclose(a) < 0) rc = -1;
  H5Sclose(space);
  return rc;
}

herr_t h5_write_attr_i64(hid_t loc, const char *name, int64_t value) {
  return write_scalar_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

herr_t h5_write_attr_f64(hid_t loc, const char *name, double value) {
  return write_scalar_attr(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}
