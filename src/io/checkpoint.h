/* checkpoint.h: HDF5 checkpoints (docs/architecture.md "Checkpoints"; rank 0 writes). One file
 * holds
 *   /model/<name>              every tensor of the parameter table (weights and batch-norm
 *                              running statistics) by PyTorch state_dict name, logical shape
 *   /optimizer/<state>/<name>  optimizer state per trainable tensor (e.g. "momentum")
 *                              (every tensor carries a `crc32` attribute: zlib's CRC-32 of its
 *                              float32 little-endian bytes, format 2 on)
 *   attributes on /            format_version, epoch, step, step_in_epoch, optimizer_steps,
 *                              world_size, seed, loss_scale, loss_scale_good_steps, model,
 *                              created (ISO time); format 2 on also the epoch's metrics so
 *                              far: epoch_loss_sum, epoch_correct, epoch_images,
 *                              window_loss_sum, window_correct, window_images,
 *                              epoch_skipped_steps
 *   /config                    the full config text as run (a string dataset)
 *   /extra/<name>              small named float arrays (loss scale, RNG state, ...)
 *   /backend/conv_algorithms   the backend's algorithm choices (int32, rows x
 *                              DT_CHECKPOINT_ALGO_COLS; backend.h algos_export), if it made any
 * Writes go to a temporary file in the same directory, are flushed and fsync'ed, then renamed
 * over the final name, so a crash never leaves a broken checkpoint under that name.
 * The file starts with an HDF5 user block of DT_CHECKPOINT_USERBLOCK bytes holding the seal:
 * a magic string, the file's length and the CRC-32 of every byte after the user block
 * (layout in checkpoint.c). Loading checks it before HDF5 reads anything; a file that starts
 * with the HDF5 signature instead is one of an older dtrain and loads without it. */
#ifndef DT_CHECKPOINT_H
#define DT_CHECKPOINT_H

#include <stdint.h>

#include "nn/params.h"
#include "optim.h" /* dt_optim_state */

/* 2: a checksum per tensor and the epoch's metrics state. Format 1 files still load (without
 * checksums to verify; their epoch metrics state reads as 0). */
#define DT_CHECKPOINT_FORMAT 2

typedef struct {
  long epoch;         /* epochs completed */
  long step;          /* global steps completed */
  long step_in_epoch; /* steps completed within `epoch` (0 at an epoch boundary) */
  long optimizer_steps;
  int world_size;
  long seed;
  /* Loss scaling (loss_scale.h): the scale and its count of good steps; 0 / 0 when a
   * checkpoint of a version without them is loaded. */
  double loss_scale;
  long loss_scale_good;
  /* The interrupted epoch's metrics (run_state.h): sums of loss, correct and images over its
   * applied steps, the same over the current output.log_every window, and its skipped
   * updates. All 0 in format 1 files. */
  double epoch_sums[3], window_sums[3];
  long epoch_skipped;
  int format_version; /* of the file loaded (set by load) */
  char model[64];
  char *config_text; /* owned by the caller on save; malloc'ed by load */
  /* The backend's algorithm choices: n_algos rows of DT_CHECKPOINT_ALGO_COLS; NULL / 0 when
   * none (a CPU run, or a file without them). Owned by the caller on save; malloc'ed by load. */
  int32_t *algos;
  size_t n_algos;
  /* Whether those choices were made with train.deterministic (only deterministic algorithms):
   * 1 or 0, the attribute `deterministic` of /backend/conv_algorithms; -1 on load from a
   * file that predates it. */
  int algos_deterministic;
} dt_checkpoint_meta;

#define DT_CHECKPOINT_ALGO_COLS 18

/* Bytes in front of HDF5's superblock that hold the seal (an HDF5 user block). */
#define DT_CHECKPOINT_USERBLOCK 512

/* Save weights and buffers (host copies laid out like the arenas), optimizer state and meta
 * to `path` atomically. Fault injection for tests: when the environment variable
 * DTRAIN_FAULT_CHECKPOINT=kill is set, the process SIGKILLs itself halfway through writing the
 * temporary file. DT_ERR_IO with a message naming the file on failure. */
dt_status dt_checkpoint_save(const char *path, const dt_params *ps, const float *weights,
                             const float *buffers, const dt_optim_state *opt,
                             const dt_checkpoint_meta *meta);

/* Load a checkpoint into host arrays laid out like the arenas of ps. Every tensor of ps must
 * be in the file with the same shape, and the file must hold no model tensor that ps lacks;
 * any mismatch, a truncated or non-HDF5 file, a file whose seal does not check (its length or
 * CRC-32 differs from the header's), or a format version newer than
 * DT_CHECKPOINT_FORMAT is DT_ERR_DATA with one message naming the file and the problem
 * (e.g. "stage1.block1.conv1.weight: shape (16,16,3,3) in the file, (32,16,3,3) in the
 * model"). So is a tensor whose checksum does not match its data, a non-finite value in any
 * tensor read, a negative running_var, an entry of /model or /optimizer that is a soft or
 * external link rather than data in the file, and a meta value outside its range (negative
 * counts, step_in_epoch beyond step, world_size < 1, a non-finite or non-positive loss scale,
 * metrics sums that cannot be). Checks against the configuration are the caller's. opt NULL = weights only (for --init); meta NULL = ignore it. buffers NULL = skip
 * the running statistics. Nothing is written to the outputs unless everything checks. */
dt_status dt_checkpoint_load(const char *path, const dt_params *ps, float *weights,
                             float *buffers, dt_optim_state *opt, dt_checkpoint_meta *meta);

/* (Re)write the seal of a checkpoint file that has the user block (one saved by
 * dt_checkpoint_save), over its current bytes: for tools and tests that edit a checkpoint
 * in place and must keep it loadable. DT_ERR_IO naming the file on failure, also for a
 * file without the user block. */
dt_status dt_checkpoint_seal(const char *path);

/* The configuration text a checkpoint was written with (its /config, malloc'ed into *text),
 * after the seal check: for commands that rebuild the model of a checkpoint (--eval,
 * --predict). DT_ERR_DATA naming the file when it is missing, corrupt or has no /config. */
dt_status dt_checkpoint_read_config(const char *path, char **text);

/* Path of the newest checkpoint in run_dir/checkpoints (by step), into out. DT_ERR_DATA if
 * there is none. */
dt_status dt_checkpoint_latest(const char *run_dir, char *out, size_t size);
/* Checkpoint file name for a step: run_dir/checkpoints/step_%09ld.h5 */
void dt_checkpoint_path(const char *run_dir, long step, char *out, size_t size);
/* Delete all but the newest keep_last checkpoints of run_dir (keep_last <= 0: keep all).
 * Temporary files of interrupted saves are not checkpoints: they stay. */
void dt_checkpoint_prune(const char *run_dir, int keep_last);
/* Delete every checkpoint of run_dir/checkpoints and every temporary file of an interrupted
 * save (a run started over must never resume from the checkpoints of the run it replaced);
 * partial_only: only those temporary files (a resumed run clears what a killed save of its
 * predecessor left). */
void dt_checkpoint_remove(const char *run_dir, bool partial_only);

#endif
