/* loader.h: sampler, augmentation and the loader thread (DESIGN "One step, as data flows").
 *
 * Sampler: one permutation of the training set per epoch, drawn from (seed, epoch). Global
 * batch b of the epoch is perm[b*B, (b+1)*B) (the last incomplete batch is dropped). A rank
 * takes the contiguous slice [offset, offset + count) of each global batch.
 * Augmentation: each sample is augmented with an RNG keyed by (seed, epoch, sample index),
 * never by rank or thread, so a run is the same for any world size.
 * Evaluation batches are the test set in order, sliced the same way; the last global batch
 * may be short (length L < B): a rank's slice [o, o + c) of it is scaled to
 * [floor(o L / B), floor((o + c) L / B)), so every test image is counted exactly once over the
 * ranks, and a rank's batch may then have n = 0. */
#ifndef DT_LOADER_H
#define DT_LOADER_H

#include "data/dataset.h"

typedef struct {
  bool random_crop;
  int crop_padding; /* zero padding in raw pixel space before the crop */
  bool hflip;
  float hflip_prob;
} dt_augment_cfg;

/* A prepared batch in host memory, normalised, plain NCHW. */
typedef struct {
  int n;          /* images in this batch (this rank's slice) */
  int global_n;   /* images in the global batch */
  long step;      /* global batch index within the epoch */
  float *images;  /* (n, C, H, W) */
  float *targets; /* (n, K) soft targets, rows sum to 1 */
  int *labels;    /* (n) */
} dt_batch;

/* Permutation of [0, count) for (seed, epoch): Fisher-Yates with dt_rng_key(seed,
 * DT_RNG_SHUFFLE, epoch, 0). */
void dt_sampler_permutation(uint64_t seed, long epoch, int count, int *perm);

/* Augment and normalise one image of `split` into out (C, H, W). aug NULL = evaluation
 * (normalise only). RNG: dt_rng_key(seed, DT_RNG_AUGMENT, epoch, index). */
void dt_augment_image(const dt_dataset *ds, const dt_split *split, int index,
                      const dt_augment_cfg *aug, uint64_t seed, long epoch, float *out);

typedef struct dt_loader dt_loader;

typedef struct {
  const dt_dataset *ds;
  bool train;              /* training: shuffled, augmented, drop-last; else test, in order */
  dt_augment_cfg aug;      /* used when train */
  uint64_t seed;
  int global_batch;        /* B */
  int slice_offset;        /* this rank's slice of each global batch */
  int slice_count;
  int threads;             /* loader threads (>= 1) */
} dt_loader_cfg;

dt_loader *dt_loader_create(const dt_loader_cfg *cfg);
/* Batches per epoch: floor(train count / B) for training, ceil(test count / B) otherwise. */
long dt_loader_steps(const dt_loader *ld);
/* Begin an epoch at global batch `first_step` (0 normally; later when resuming). The loader
 * thread starts preparing the batches of that epoch at once. */
void dt_loader_start(dt_loader *ld, long epoch, long first_step);
/* The next batch of the current epoch, or NULL at its end. The batch stays valid until the
 * next call; the loader prepares the following one meanwhile. */
const dt_batch *dt_loader_next(dt_loader *ld);
void dt_loader_free(dt_loader *ld);

#endif
