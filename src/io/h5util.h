/* h5util.h: HDF5 helpers shared by the checkpoint and metrics writers. */
#ifndef DT_H5UTIL_H
#define DT_H5UTIL_H

#include <stdint.h>

#include <hdf5.h>

/* HDF5's automatic error printing, switched off while our functions run (the user sees our
 * one-line message) and restored on the way out. */
typedef struct {
  H5E_auto2_t func;
  void *data;
} h5_quiet;

/* Called before any other HDF5 call: no library clean-up at exit. dtrain closes every file it
 * opens; what the clean-up would find after a write that failed on a full disk (a file HDF5
 * could not create) only makes it print "infinite loop closing library" after our message. */
void h5_init(void);

void h5_quiet_begin(h5_quiet *q);
void h5_quiet_end(const h5_quiet *q);
/* These helpers, and the file-local HDF5 helpers of checkpoint.c and metrics.c, speak HDF5's
 * own convention (herr_t / hid_t: negative on failure) and set no message: each is called by a
 * function that names the file and returns a dt_status with the message (common.h). */
/* A scalar int64 attribute. */
herr_t h5_write_attr_i64(hid_t loc, const char *name, int64_t value);
/* A scalar float64 attribute. */
herr_t h5_write_attr_f64(hid_t loc, const char *name, double value);

#endif
