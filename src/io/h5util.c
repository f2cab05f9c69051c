/* h5util.c: HDF5 helpers shared by the checkpoint and metrics writers. */
#include "io/h5util.h"

void h5_quiet_begin(h5_quiet *q) {
  H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5_quiet_end(const h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

int h5_write_attr_i64(hid_t loc, const char *name, int64_t value) {
  hid_t space = H5Screate(H5S_SCALAR);
  if (space < 0) return -1;
  hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  int rc = -1;
  if (a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &value) >= 0) rc = 0;
  if (a >= 0 && H5Aclose(a) < 0) rc = -1;
  H5Sclose(space);
  return rc;
}
