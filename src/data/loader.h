/* loader.h: sampler, augmentation, batch mixing and the loader thread (docs/architecture.md "One
 * step"; docs/reference-experiments.md "Datasets", "Augmentations and losses").
 *
 * Sampler: one permutation of the training set per epoch, drawn from (seed, epoch). Global
 * batch b of the epoch is perm[b*B, (b+1)*B) (the last incomplete batch is dropped). A rank
 * takes the contiguous slice [offset, offset + count) of each global batch.
 *
 * Per-image augmentation, in the reference order Crop -> Flip -> Normalise -> Cutout ->
 * RandomErasing -> Dual-Cutout, draws from one stream dt_rng_key(seed, DT_RNG_AUGMENT, epoch,
 * sample index), never keyed by rank or thread, in this order (each draw only when its step is
 * on):
 *   crop     top = below(2p+1), left = below(2p+1)          (p = crop_padding)
 *   flip     u = uniform(); flip when u < hflip_prob
 *   Cutout   u = uniform(); skip when u > prob; cx = cmin + below(cmax - cmin), then cy alike,
 *            with [cmin, cmax) = [0, S + off), or [m/2, S + off - m/2) when inside
 *            (m = mask size, m/2 rounded down, off = 1 for even m, S = W or H); the box
 *            [c - m/2, c - m/2 + m) is clipped to the image and set to 0 in every channel
 *   Erasing  u = uniform(); skip when u > prob; then up to max_attempts times:
 *            area = (amin + (amax - amin) u) H W, r = rmin + (1/rmin - rmin) u,
 *            h = floor(sqrt(area r)), w = floor(sqrt(area / r)); if w < W and h < H:
 *            x0 = below(W - w), y0 = below(H - h), v = uniform(); fill [y0, y0+h) x [x0, x0+w)
 *            of every channel with v, and stop
 *   Dual     two Cutout draws as above, the first on view 1, the second on view 2 (both start
 *            from the same cropped, flipped, normalised, erased image)
 *
 * Batch mixing (mixup, RICAP, CutMix) acts on the whole GLOBAL batch: its draws come from
 * dt_rng_key(seed, DT_RNG_BATCH, epoch, global batch index) (dt_mix_draw), and its
 * permutations index positions in the global batch. A rank augments only the images its slice
 * needs (its own and their partners), so every rank's slice is bit for bit the same as the
 * same rows of the single-rank batch.
 *
 * Evaluation batches are the test set in order, sliced the same way, never augmented, mixed or
 * smoothed; the last global batch may be short (length L < B): a rank's slice [o, o + c) of it
 * is scaled to [floor(o L / B), floor((o + c) L / B)), so every test image is counted exactly
 * once over the ranks, and a rank's batch may then have n = 0. */
#ifndef DT_LOADER_H
#define DT_LOADER_H

#include "data/dataset.h"
#include "rng.h"


/* Geometric augmentation in raw pixel space. */
typedef struct {
  bool random_crop;
  int crop_padding; /* zero padding in raw pixel space before the crop */
  bool hflip;
  float hflip_prob;
} dt_augment_cfg;

/* Region erasing after normalisation (docs/reference-experiments.md "Augmentations and losses").
 * All false = none. */
typedef struct {
  bool cutout;
  bool random_erasing;
  bool dual_cutout;          /* two views with independent Cutout draws (batch images2) */
  double cutout_prob;        /* Cutout and Dual-Cutout */
  int cutout_size;
  bool cutout_inside;
  double erasing_prob;
  double erasing_area_min;   /* fractions of H W */
  double erasing_area_max;
  double erasing_min_aspect; /* h/w ratio drawn from [min, 1/min] */
  int erasing_max_attempts;
} dt_erase_cfg;

typedef enum { DT_MIX_NONE = 0, DT_MIX_MIXUP, DT_MIX_RICAP, DT_MIX_CUTMIX } dt_mix_kind;

/* How the training targets are built: batch mixing, or label smoothing (never both). */
typedef struct {
  dt_mix_kind kind;
  double alpha;           /* mixup and CutMix: Beta(alpha, alpha); RICAP: Beta(beta, beta) */
  double label_smoothing; /* epsilon; only with DT_MIX_NONE; 0 = one-hot targets */
} dt_mix_cfg;

/* A prepared batch in host memory, normalised, plain NCHW.
 *
 * Targets: row i is the soft target of image i; rows sum to 1 (within float rounding).
 *   plain        onehot(y)
 *   smoothing    (1 - eps) onehot(y) + eps / K
 *   mixup/CutMix lambda onehot(y) + (1 - lambda) onehot(y[perm]), lambda as sampled
 *   RICAP        sum_k (w_k h_k / (W H)) onehot(y[perm_k])
 * so cross-entropy against the row is the reference loss of every method but Dual-Cutout.
 * labels[i] is always the label of the sample whose image is at row i before mixing.
 * mixed: the targets come from batch mixing; the reference training accuracy (the mix of the
 * accuracies) is then sum_i targets[i, argmax logits_i] / n instead of the label match.
 *
 * Dual-Cutout contract: images2 is NULL unless dual-cutout is on. When on, images holds view 1
 * and images2 view 2 of the same samples (n, C, H, W); the trainer runs two forward passes
 * (separate batch-norm statistics), z1 on images and z2 on images2, and minimises
 *   0.5 [CE(z1, y) + CE(z2, y)] + alpha * MSE(z1, z2)
 * with CE averaged over the global batch and MSE over its N x K logits; training accuracy is
 * taken on (z1 + z2) / 2. */
typedef struct {
  int n;          /* images in this batch (this rank's slice) */
  int global_n;   /* images in the global batch */
  long step;      /* global batch index within the epoch */
  long first;     /* evaluation: the test index of row 0 (rows are consecutive); else -1 */
  float *images;  /* (n, C, H, W) */
  float *targets; /* (n, K) soft targets, rows sum to 1 */
  int *labels;    /* (n) */
  float *images2; /* (n, C, H, W) second Dual-Cutout view, or NULL */
  bool mixed;     /* targets built by mixup, RICAP or CutMix */
} dt_batch;

/* Permutation of [0, count) for (seed, epoch): Fisher-Yates with dt_rng_key(seed,
 * DT_RNG_SHUFFLE, epoch, 0). */
void dt_sampler_permutation(uint64_t seed, long epoch, int count, int *perm);

/* Crop, flip and normalise one image of `split` into out (C, H, W). aug NULL = evaluation
 * (normalise only). RNG: dt_rng_key(seed, DT_RNG_AUGMENT, epoch, index). */
void dt_augment_image(const dt_dataset *ds, const dt_split *split, int index,
                      const dt_augment_cfg *aug, uint64_t seed, long epoch, float *out);

/* The whole per-image pipeline: dt_augment_image, then Cutout, Random Erasing and Dual-Cutout
 * from the same stream (erase NULL = none). out2 (C, H, W) receives view 2 when
 * erase->dual_cutout; it may be NULL, and out is the same either way. */
void dt_augment_views(const dt_dataset *ds, const dt_split *split, int index,
                      const dt_augment_cfg *aug, const dt_erase_cfg *erase, uint64_t seed,
                      long epoch, float *out, float *out2);

/* ---- batch mixing (mix.c) ---- */

/* Gamma(shape, 1) by Marsaglia-Tsang (shape < 1: Gamma(shape + 1) U^(1/shape)); returns its
 * natural logarithm, so that tiny shapes do not underflow. shape > 0. */
double dt_mix_log_gamma(dt_rng *r, double shape);
/* Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b), drawn in that order. */
double dt_mix_beta(dt_rng *r, double a, double b);
/* Fisher-Yates permutation of [0, n) from the top, j = below(i + 1) (as the sampler). */
void dt_mix_permutation(dt_rng *r, int n, int *perm);

/* The draws of one global batch of B images of size H x W. */
typedef struct {
  dt_mix_kind kind;
  int B;
  int *perm[4];     /* (B) each; mixup and CutMix use perm[0], RICAP patch k uses perm[k] */
  double lambda;    /* mixup and CutMix: the sampled lambda */
  /* CutMix: continuous centre and the pasted box [x0, x1) x [y0, y1) */
  double cx, cy;
  int box_x0, box_x1, box_y0, box_y1;
  /* RICAP: patch k (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) is w[k] x h[k],
   * placed at (px[k], py[k]) of the output and cut from (x0[k], y0[k]) of image perm[k][i] */
  double ratio_w, ratio_h;
  int w[4], h[4], px[4], py[4], x0[4], y0[4];
  double weight[4]; /* w h / (W H) */
} dt_mix_params;

void dt_mix_params_init(dt_mix_params *p, int B);
void dt_mix_params_free(dt_mix_params *p);
/* Draw the mixing of global batch `step` from dt_rng_key(seed, DT_RNG_BATCH, epoch, step),
 * following the reference order:
 *   mixup   perm[0], lambda ~ Beta(a, a)
 *   CutMix  perm[0], lambda ~ Beta(a, a), cx = W u, cy = H u; w = W sqrt(1 - lambda),
 *           h = H sqrt(1 - lambda); x0 = rint(max(cx - w/2, 0)), x1 = rint(min(cx + w/2, W)),
 *           y likewise (rint: round half to even, as numpy)
 *   RICAP   r_w, r_h ~ Beta(b, b); w0 = rint(W r_w), h0 = rint(H r_h); for k = 0..3:
 *           perm[k], x0[k] = below(W - w[k] + 1), y0[k] = below(H - h[k] + 1)
 * DT_MIX_NONE draws nothing. */
void dt_mix_draw(const dt_mix_cfg *cfg, uint64_t seed, long epoch, long step, int H, int W,
                 dt_mix_params *p);
/* Output image at global position g (C, H, W) from the augmented images it draws on:
 *   mixup, CutMix  src[0] = image g, src[1] = image perm[0][g]
 *   RICAP          src[k] = image perm[k][g], k = 0..3
 * Mixup computes lambda x + (1 - lambda) x_perm in float, each factor rounded to float once. */
void dt_mix_image(const dt_mix_params *p, int C, int H, int W, const float *const src[4],
                  float *out);
/* Target row (K) of global position g; labels (B) are the labels of the global batch. */
void dt_mix_target(const dt_mix_cfg *cfg, const dt_mix_params *p, int g, const int *labels,
                   int K, float *row);

/* ---- the loader ---- */

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
  /* Where the image buffers come from (both NULL: aligned host memory): a GPU backend hands
   * out page-locked memory, from which it copies asynchronously (host_alloc in backend.h). */
  void *(*image_alloc)(void *ctx, size_t bytes);
  void (*image_free)(void *ctx, void *ptr);
  void *image_ctx;
} dt_loader_cfg;

/* A loader without erasing, mixing or smoothing (evaluation, or plain training). */
dt_loader *dt_loader_create(const dt_loader_cfg *cfg);
/* A training loader (cfg->train) with region erasing and batch mixing or label smoothing;
 * NULL = none. Dual-Cutout with mixing, or smoothing with mixing, is a programming error (the
 * config check refuses them). */
dt_loader *dt_loader_create_train(const dt_loader_cfg *cfg, const dt_erase_cfg *erase,
                                  const dt_mix_cfg *mix);
/* Batches per epoch: floor(train count / B) for training, ceil(test count / B) otherwise. */
long dt_loader_steps(const dt_loader *ld);
/* Begin an epoch at global batch `first_step` (0 normally; later when resuming). The loader
 * thread starts preparing the batches of that epoch at once. */
void dt_loader_start(dt_loader *ld, long epoch, long first_step);
/* The next batch of the current epoch, or NULL at its end. The batch stays valid until the
 * next call; the loader prepares the following one meanwhile. */
const dt_batch *dt_loader_next(dt_loader *ld);
/* The batch the next dt_loader_next will return, without giving up the current one (waits
 * until it is ready), or NULL at the epoch's end: a GPU trainer starts copying it while the
 * current step computes. It stays valid, unchanged, until the dt_loader_next after that. */
const dt_batch *dt_loader_peek(dt_loader *ld);
void dt_loader_free(dt_loader *ld);

#endif
