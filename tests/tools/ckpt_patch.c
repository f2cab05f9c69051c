/* ckpt_patch.c: edit a checkpoint in place to make the bad files the resume tests feed dtrain.
 *   ckpt_patch FILE.h5 set-attr NAME VALUE   (re)write integer attribute NAME of / as VALUE
 *                                            (e.g. format_version 99: a "future" checkpoint)
 *   ckpt_patch FILE.h5 delete PATH           unlink dataset or group PATH (e.g. model/fc.bias)
 * The file's seal (whole-file checksum, checkpoint.h) is rewritten after the edit, so that
 * dtrain reaches the check the edit is about. Exit 0 on success, 1 on failure (with a
 * message), 2 for bad usage. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "io/checkpoint.h"

static int set_attr(hid_t file, const char *name, int64_t value) {
  if (H5Aexists(file, name) > 0 && H5Adelete(file, name) < 0) return -1;
  hid_t space = H5Screate(H5S_SCALAR);
  if (space < 0) return -1;
  hid_t a = H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &value) >= 0 ? 0 : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(space);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[2], "set-attr") == 0 ? argc != 5
                   : strcmp(argv[2], "delete") == 0 ? argc != 4
                                                    : 1)) {
    fprintf(stderr, "usage: ckpt_patch FILE.h5 set-attr NAME VALUE | ckpt_patch FILE.h5 delete PATH\n");
    return 2;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t file = H5Fopen(argv[1], H5F_ACC_RDWR, H5P_DEFAULT);
  if (file < 0) {
    fprintf(stderr, "ckpt_patch: %s: cannot open for writing as HDF5\n", argv[1]);
    return 1;
  }
  int rc;
  if (strcmp(argv[2], "set-attr") == 0) {
    char *end;
    long long v = strtoll(argv[4], &end, 10);
    rc = *argv[4] && !*end ? set_attr(file, argv[3], (int64_t)v) : -1;
  } else {
    rc = H5Ldelete(file, argv[3], H5P_DEFAULT) < 0 ? -1 : 0;
  }
  if (H5Fclose(file) < 0) rc = -1;
  if (rc != 0) {
    fprintf(stderr, "ckpt_patch: %s: %s %s failed\n", argv[1], argv[2], argv[3]);
    return 1;
  }
  if (dt_checkpoint_seal(argv[1]) != DT_OK) {
    fprintf(stderr, "ckpt_patch: %s\n", dt_error_message());
    return 1;
  }
  return 0;
}
