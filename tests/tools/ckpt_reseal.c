/* ckpt_reseal.c: rewrite the seal (whole-file checksum, checkpoint.h) of checkpoints that a
 * test has edited in place (h5py, ckpt_patch), so that dtrain reaches the checks the test is
 * about instead of refusing the file's checksum.
 *   ckpt_reseal FILE.h5...
 * Exit 0 on success, 1 on failure (with a message), 2 for bad usage. */
#include <stdio.h>

#include "io/checkpoint.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ckpt_reseal FILE.h5...\n");
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    if (dt_checkpoint_seal(argv[i]) != DT_OK) {
      fprintf(stderr, "ckpt_reseal: %s\n", dt_error_message());
      return 1;
    }
  }
  return 0;
}
