/* loader.c: the epoch sampler and the batch-preparing thread pool (docs/architecture.md "One
 * step"); the per-image pipeline is augment.c, batch mixing and targets mix.c.
 *
 * Training batches: perm = dt_sampler_permutation(seed, epoch, train count); global batch b
 * is perm[b*B, (b+1)*B), the last incomplete batch dropped; this rank takes entries
 * [slice_offset, slice_offset + slice_count) of it. Each sample is augmented with the RNG
 * keyed by (seed, epoch, sample index) (dt_augment_views). With batch mixing, the mixing of
 * global batch b is drawn from (seed, epoch, b) (dt_mix_draw), and each output row g of the
 * slice is made from the augmented images it names (row g and its partner, or the four RICAP
 * sources), augmented again by this rank as needed. Targets come from dt_mix_target.
 *
 * Evaluation batches: the test split in order; global batch b is [b*B, b*B + L) with
 * L = min(B, count - b*B). The rank's slice is scaled to the actual batch length:
 *   [floor(slice_offset * L / B), floor((slice_offset + slice_count) * L / B))
 * For a full batch (L = B) that is the slice itself. For the last, short batch it gives rank
 * i of R equal slices (offset i*B/R) the range [floor(i*L/R), floor((i+1)*L/R)), and in
 * general any set of slices that tiles [0, B) is mapped onto ranges that tile [0, L), so each
 * test image is counted exactly once whatever the world size. A rank may get n = 0 images in
 * a short batch; global_n is L.
 *
 * Threads: cfg->threads workers fill a ring of threads + 1 batch slots (at least double
 * buffering). Step s of the epoch always goes to slot (s - first_step) mod slots, and workers
 * claim steps in order only when that slot is free, so dt_loader_next hands the batches out
 * in step order. The content of a batch depends only on (seed, epoch, step, slice), never on
 * which thread made it or when. dt_loader_start waits for the workers to finish the batches
 * they are making, then discards everything prepared and begins the new epoch. */
#include "data/loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>


void dt_sampler_permutation(uint64_t seed, long epoch, int count, int *perm) {
  for (int i = 0; i < count; i++) perm[i] = i;
  dt_rng r = dt_rng_key(seed, DT_RNG_SHUFFLE, (uint64_t)epoch, 0);
  for (int i = count - 1; i > 0; i--) {
    int j = (int)dt_rng_below(&r, (uint64_t)i + 1);
    int t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

typedef enum { DT_SLOT_FREE, DT_SLOT_FILLING, DT_SLOT_READY, DT_SLOT_HELD } dt_slot_state;

typedef struct {
  dt_slot_state state;
  dt_batch batch;
  /* training scratch, touched only by the worker filling the slot */
  dt_mix_params mix;  /* draws of the global batch */
  int *batch_labels;  /* (B) labels of the global batch */
  float *sources;     /* (4, C, H, W) augmented images a mixed row draws on */
} dt_slot;

struct dt_loader {
  dt_loader_cfg cfg;
  dt_erase_cfg erase; /* training only; zero = none */
  dt_mix_cfg mix;     /* training only; zero = one-hot targets */
  const dt_split *split;
  long steps;
  size_t image_floats; /* C * H * W */
  int *perm;           /* training permutation of the current epoch */
  int nslots;
  dt_slot *slots;
  pthread_t *threads;
  int nthreads;

  pthread_mutex_t mu;
  pthread_cond_t cv; /* every state change is broadcast; the pool is small */
  bool active;       /* an epoch has been started */
  bool resetting;    /* dt_loader_start is waiting for the workers to go idle */
  bool quit;
  int busy;          /* workers filling a slot */
  long epoch, first, claim, head;
  int held;          /* slot returned by the last dt_loader_next, or -1 */
  int peeked;        /* slot of the batch dt_loader_peek returned (step head), or -1 */
};

/* Image buffers: the configured allocator (page-locked memory of a GPU backend) or aligned
 * host memory. */
static void *image_alloc(const dt_loader_cfg *cfg, size_t bytes) {
  if (!cfg->image_alloc) return dt_xaligned(DT_MAX(bytes, 1));
  void *p = cfg->image_alloc(cfg->image_ctx, DT_MAX(bytes, 1));
  DT_CHECK(p != NULL);
  return p;
}

static void image_free(const dt_loader_cfg *cfg, void *p) {
  if (!p) return;
  if (cfg->image_free) cfg->image_free(cfg->image_ctx, p);
  else free(p);
}

/* The rank's test indices [begin, end) of evaluation batch `step`; returns the global batch
 * length L (the slice scaled to L, see the file comment). */
static int dt_loader_eval_range(const dt_loader *ld, long step, long *begin, long *end) {
  const long B = ld->cfg.global_batch;
  const long L = DT_MIN(B, (long)ld->split->count - step * B);
  *begin = step * B + (long)ld->cfg.slice_offset * L / B;
  *end = step * B + (long)(ld->cfg.slice_offset + ld->cfg.slice_count) * L / B;
  return (int)L;
}

/* Evaluation: the test images of the slice, normalised, one-hot targets. */
static void dt_loader_fill_eval(dt_loader *ld, long step, dt_batch *b) {
  long begin, end;
  b->global_n = dt_loader_eval_range(ld, step, &begin, &end);
  b->n = (int)(end - begin);
  b->step = step;
  b->first = begin;
  const int K = ld->cfg.ds->classes;
  memset(b->targets, 0, sizeof(float) * (size_t)b->n * K);
  for (int i = 0; i < b->n; i++) {
    const int index = (int)(begin + i);
    dt_augment_image(ld->cfg.ds, ld->split, index, NULL, ld->cfg.seed, ld->epoch,
                     b->images + (size_t)i * ld->image_floats);
    const int label = ld->split->labels[index];
    b->labels[i] = label;
    b->targets[(size_t)i * K + label] = 1.0f;
  }
}

/* Training: augment the rows of the slice, mix them over the global batch, build targets. */
static void dt_loader_fill_train(dt_loader *ld, long step, dt_slot *slot) {
  const dt_loader_cfg *cfg = &ld->cfg;
  const dt_erase_cfg *erase = &ld->erase;
  const dt_mix_cfg *mix = &ld->mix;
  dt_batch *b = &slot->batch;
  const int B = cfg->global_batch, K = cfg->ds->classes;
  const int C = ld->split->channels, H = ld->split->height, W = ld->split->width;
  const int *index = ld->perm + step * B; /* (B) sample indices of the global batch */
  b->global_n = B;
  b->n = cfg->slice_count;
  b->step = step;
  b->first = -1;
  b->mixed = mix->kind != DT_MIX_NONE;
  dt_mix_params *mp = &slot->mix;
  dt_mix_draw(mix, cfg->seed, ld->epoch, step, H, W, mp);
  for (int g = 0; g < B; g++) slot->batch_labels[g] = ld->split->labels[index[g]];
  const size_t F = ld->image_floats;
  for (int i = 0; i < b->n; i++) {
    const int g = cfg->slice_offset + i;
    float *x = b->images + (size_t)i * F;
    if (mp->kind == DT_MIX_NONE) {
      dt_augment_views(cfg->ds, ld->split, index[g], &cfg->aug, erase, cfg->seed, ld->epoch,
                       x, b->images2 ? b->images2 + (size_t)i * F : NULL);
    } else {
      /* the positions in the global batch whose augmented images row g is made of */
      int pos[4], nsrc;
      if (mp->kind == DT_MIX_RICAP) {
        nsrc = 4;
        for (int k = 0; k < 4; k++) pos[k] = mp->perm[k][g];
      } else {
        nsrc = 2;
        pos[0] = g, pos[1] = mp->perm[0][g];
      }
      const float *src[4] = {NULL, NULL, NULL, NULL};
      for (int k = 0; k < nsrc; k++) {
        float *s = slot->sources + (size_t)k * F;
        dt_augment_views(cfg->ds, ld->split, index[pos[k]], &cfg->aug, erase, cfg->seed,
                         ld->epoch, s, NULL);
        src[k] = s;
      }
      dt_mix_image(mp, C, H, W, src, x);
    }
    b->labels[i] = slot->batch_labels[g];
    dt_mix_target(mix, mp, g, slot->batch_labels, K, b->targets + (size_t)i * K);
  }
}

static void dt_loader_fill(dt_loader *ld, long step, dt_slot *slot) {
  if (ld->cfg.train)
    dt_loader_fill_train(ld, step, slot);
  else
    dt_loader_fill_eval(ld, step, &slot->batch);
}

static bool dt_loader_can_claim(const dt_loader *ld) {
  return ld->active && !ld->resetting && ld->claim < ld->steps &&
         ld->slots[(ld->claim - ld->first) % ld->nslots].state == DT_SLOT_FREE;
}

static void *dt_loader_worker(void *arg) {
  dt_loader *ld = arg;
  pthread_mutex_lock(&ld->mu);
  for (;;) {
    while (!ld->quit && !dt_loader_can_claim(ld)) pthread_cond_wait(&ld->cv, &ld->mu);
    if (ld->quit) break;
    const long step = ld->claim++;
    dt_slot *slot = &ld->slots[(step - ld->first) % ld->nslots];
    slot->state = DT_SLOT_FILLING;
    ld->busy++;
    /* perm, epoch and the slot stay untouched while busy > 0 (dt_loader_start waits). */
    pthread_mutex_unlock(&ld->mu);
    dt_loader_fill(ld, step, slot);
    pthread_mutex_lock(&ld->mu);
    slot->state = DT_SLOT_READY;
    ld->busy--;
    pthread_cond_broadcast(&ld->cv);
  }
  pthread_mutex_unlock(&ld->mu);
  return NULL;
}

dt_loader *dt_loader_create(const dt_loader_cfg *cfg) { return dt_loader_create_train(cfg, NULL, NULL); }

dt_loader *dt_loader_create_train(const dt_loader_cfg *cfg, const dt_erase_cfg *erase,
                                  const dt_mix_cfg *mix) {
  DT_CHECK(cfg->ds && cfg->global_batch > 0 && cfg->threads >= 1);
  DT_CHECK(cfg->slice_offset >= 0 && cfg->slice_count > 0 &&
           cfg->slice_offset + cfg->slice_count <= cfg->global_batch);
  DT_CHECK(cfg->train || (!erase && !mix));
  dt_loader *ld = dt_xcalloc(1, sizeof *ld);
  ld->cfg = *cfg;
  if (erase) ld->erase = *erase;
  if (mix) ld->mix = *mix;
  /* Combinations the config check refuses (docs/reference-experiments.md "Augmentations and
   * losses": one loss at a time). */
  DT_CHECK(!(ld->erase.dual_cutout && ld->mix.kind != DT_MIX_NONE));
  DT_CHECK(ld->mix.kind == DT_MIX_NONE || ld->mix.label_smoothing == 0);
  DT_CHECK(ld->mix.kind == DT_MIX_NONE || ld->mix.alpha > 0);
  ld->split = cfg->train ? &cfg->ds->train : &cfg->ds->test;
  const long count = ld->split->count, B = cfg->global_batch;
  ld->steps = cfg->train ? count / B : (count + B - 1) / B;
  ld->image_floats = (size_t)ld->split->channels * ld->split->height * ld->split->width;
  ld->perm = cfg->train ? dt_xmalloc(sizeof(int) * (size_t)DT_MAX(count, 1L)) : NULL;
  ld->nslots = cfg->threads + 1;
  ld->slots = dt_xcalloc((size_t)ld->nslots, sizeof *ld->slots);
  const size_t n = (size_t)cfg->slice_count, K = (size_t)cfg->ds->classes;
  const bool dual = ld->erase.dual_cutout;
  for (int s = 0; s < ld->nslots; s++) {
    dt_slot *slot = &ld->slots[s];
    dt_batch *b = &slot->batch;
    b->images = image_alloc(cfg, sizeof(float) * n * ld->image_floats);      // (n, C, H, W)
    b->targets = dt_xmalloc(sizeof(float) * n * K);                          // (n, K)
    b->labels = dt_xmalloc(sizeof(int) * n);                                 // (n)
    b->images2 = dual ? image_alloc(cfg, sizeof(float) * n * ld->image_floats) : NULL; // (n, C, H, W)
    if (cfg->train) {
      dt_mix_params_init(&slot->mix, (int)B);
      slot->batch_labels = dt_xmalloc(sizeof(int) * (size_t)B);                 // (B)
      slot->sources = dt_xaligned(sizeof(float) * 4 * ld->image_floats);        // (4, C, H, W)
    }
  }
  ld->held = -1;
  const int mu_rc = pthread_mutex_init(&ld->mu, NULL);
  DT_CHECK(mu_rc == 0);
  const int cv_rc = pthread_cond_init(&ld->cv, NULL);
  DT_CHECK(cv_rc == 0);
  ld->nthreads = cfg->threads;
  ld->threads = dt_xcalloc((size_t)ld->nthreads, sizeof *ld->threads);
  for (int t = 0; t < ld->nthreads; t++)
    if (pthread_create(&ld->threads[t], NULL, dt_loader_worker, ld) != 0)
      DT_FATAL("cannot start loader thread %d of %d", t + 1, ld->nthreads);
  return ld;
}

long dt_loader_steps(const dt_loader *ld) { return ld->steps; }

void dt_loader_start(dt_loader *ld, long epoch, long first_step) {
  DT_CHECK(first_step >= 0);
  pthread_mutex_lock(&ld->mu);
  ld->resetting = true;
  while (ld->busy > 0) pthread_cond_wait(&ld->cv, &ld->mu);
  for (int s = 0; s < ld->nslots; s++) ld->slots[s].state = DT_SLOT_FREE;
  ld->held = ld->peeked = -1;
  ld->epoch = epoch;
  ld->first = ld->claim = ld->head = first_step;
  if (ld->cfg.train)
    dt_sampler_permutation(ld->cfg.seed, epoch, ld->split->count, ld->perm);
  ld->resetting = false;
  ld->active = true;
  pthread_cond_broadcast(&ld->cv);
  pthread_mutex_unlock(&ld->mu);
}

const dt_batch *dt_loader_next(dt_loader *ld) {
  pthread_mutex_lock(&ld->mu);
  if (ld->held >= 0) {
    ld->slots[ld->held].state = DT_SLOT_FREE;
    ld->held = -1;
    pthread_cond_broadcast(&ld->cv);
  }
  if (!ld->active || ld->head >= ld->steps) {
    pthread_mutex_unlock(&ld->mu);
    return NULL;
  }
  const int s = (int)((ld->head - ld->first) % ld->nslots);
  if (ld->peeked != s)
    while (ld->slots[s].state != DT_SLOT_READY) pthread_cond_wait(&ld->cv, &ld->mu);
  ld->slots[s].state = DT_SLOT_HELD;
  ld->held = s;
  ld->peeked = -1;
  ld->head++;
  const dt_batch *b = &ld->slots[s].batch;
  pthread_mutex_unlock(&ld->mu);
  return b;
}

const dt_batch *dt_loader_peek(dt_loader *ld) {
  pthread_mutex_lock(&ld->mu);
  const dt_batch *b = NULL;
  if (ld->active && ld->head < ld->steps) {
    const int s = (int)((ld->head - ld->first) % ld->nslots);
    /* A ring of one slot holds the current batch: its successor cannot exist yet. */
    DT_CHECK(s != ld->held);
    if (ld->peeked != s) {
      while (ld->slots[s].state != DT_SLOT_READY) pthread_cond_wait(&ld->cv, &ld->mu);
      ld->slots[s].state = DT_SLOT_HELD; /* no worker refills it */
      ld->peeked = s;
    }
    b = &ld->slots[s].batch;
  }
  pthread_mutex_unlock(&ld->mu);
  return b;
}

void dt_loader_free(dt_loader *ld) {
  if (!ld) return;
  pthread_mutex_lock(&ld->mu);
  ld->quit = true;
  pthread_cond_broadcast(&ld->cv);
  pthread_mutex_unlock(&ld->mu);
  for (int t = 0; t < ld->nthreads; t++) pthread_join(ld->threads[t], NULL);
  pthread_cond_destroy(&ld->cv);
  pthread_mutex_destroy(&ld->mu);
  for (int s = 0; s < ld->nslots; s++) {
    image_free(&ld->cfg, ld->slots[s].batch.images);
    free(ld->slots[s].batch.targets);
    free(ld->slots[s].batch.labels);
    image_free(&ld->cfg, ld->slots[s].batch.images2);
    if (ld->cfg.train) dt_mix_params_free(&ld->slots[s].mix);
    free(ld->slots[s].batch_labels);
    free(ld->slots[s].sources);
  }
  free(ld->slots);
  free(ld->threads);
  free(ld->perm);
  free(ld);
}
