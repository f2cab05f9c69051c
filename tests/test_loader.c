/* test_loader.c: sampler, augmentation and the threaded loader on small synthetic datasets
 * built in memory. Checks the permutation, the exact crop / flip / normalise semantics, that
 * rank slices concatenate to the single-rank batch bit for bit, that the threaded loader
 * returns exactly what dt_augment_image computes directly, that evaluation counts every test
 * image once for any world size, and that restarting mid-epoch resumes the same batches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "data/loader.h"
#include "rng.h"
#include "testutil.h"

/* A dataset of random pixels in 1..255 (never 0, so padding is recognisable) and labels. */
static dt_dataset make_ds(int C, int H, int W, int ntrain, int ntest, int classes, uint64_t seed) {
  dt_dataset ds;
  memset(&ds, 0, sizeof ds);
  ds.name = "synthetic";
  ds.classes = classes;
  for (int c = 0; c < 3; c++) {
    ds.mean[c] = 0.25f + 0.125f * (float)c;
    ds.std[c] = 0.3f - 0.05f * (float)c;
  }
  dt_rng r = dt_rng_key(seed, 77, 0, 0);
  dt_split *splits[2] = {&ds.train, &ds.test};
  int counts[2] = {ntrain, ntest};
  for (int s = 0; s < 2; s++) {
    dt_split *sp = splits[s];
    sp->count = counts[s];
    sp->channels = C;
    sp->height = H;
    sp->width = W;
    size_t px = (size_t)counts[s] * C * H * W;
    sp->images = malloc(px ? px : 1);
    sp->labels = malloc(counts[s] ? (size_t)counts[s] : 1);
    for (size_t i = 0; i < px; i++) sp->images[i] = (uint8_t)(1 + dt_rng_below(&r, 255));
    for (int i = 0; i < counts[s]; i++) sp->labels[i] = (uint8_t)dt_rng_below(&r, (uint64_t)classes);
  }
  return ds;
}

static float norm_px(const dt_dataset *ds, int c, uint8_t v) {
  return ((float)v / 255.0f - ds->mean[c]) / ds->std[c];
}

static bool same_floats(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof(float)) == 0;
}

/* The expected output for crop origin (top, left) in the padded image, optionally flipped. */
static void window(const dt_dataset *ds, const dt_split *sp, int index, int pad, int top, int left,
                   bool flip, float *out) {
  const int C = sp->channels, H = sp->height, W = sp->width;
  const uint8_t *img = sp->images + (size_t)index * C * H * W;
  for (int c = 0; c < C; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        int cx = flip ? W - 1 - x : x; /* column within the crop */
        int py = y + top, px = cx + left; /* in the padded image */
        int sy = py - pad, sx = px - pad;
        uint8_t v = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? img[(c * H + sy) * W + sx] : 0;
        out[(c * H + y) * W + x] = norm_px(ds, c, v);
      }
}

/* ---- sampler ---- */

static void test_permutation(void **state) {
  (void)state;
  enum { N = 1000 };
  static int a[N], b[N], c[N], d[N], again[N];
  dt_sampler_permutation(1, 0, N, a);
  dt_sampler_permutation(1, 1, N, b);
  dt_sampler_permutation(2, 0, N, c);
  dt_sampler_permutation(1, 0, N, again);
  int *all[3] = {a, b, c};
  for (int k = 0; k < 3; k++) {
    static bool seen[N];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++) {
      assert_true(all[k][i] >= 0 && all[k][i] < N);
      assert_false(seen[all[k][i]]);
      seen[all[k][i]] = true;
    }
  }
  assert_memory_equal(a, again, sizeof a);
  int same_ab = 0, same_ac = 0, fixed = 0;
  for (int i = 0; i < N; i++) {
    same_ab += a[i] == b[i];
    same_ac += a[i] == c[i];
    fixed += a[i] == i;
  }
  /* Independent random permutations agree in about one place; allow a generous margin. */
  assert_true(same_ab < 20);
  assert_true(same_ac < 20);
  assert_true(fixed < 20);

  /* The documented algorithm (loader.h): Fisher-Yates from the top, j uniform in [0, i]. */
  for (int i = 0; i < N; i++) d[i] = i;
  dt_rng r = dt_rng_key(1, DT_RNG_SHUFFLE, 0, 0);
  for (int i = N - 1; i > 0; i--) {
    int j = (int)dt_rng_below(&r, (uint64_t)i + 1);
    int t = d[i];
    d[i] = d[j];
    d[j] = t;
  }
  assert_memory_equal(a, d, sizeof a);

  int one = -1;
  dt_sampler_permutation(5, 3, 1, &one);
  assert_int_equal(one, 0);
  dt_sampler_permutation(5, 3, 0, NULL);
}

/* ---- augmentation ---- */

/* Find the crop origins (and flips, when allowed) that reproduce out exactly. */
static int find_windows(const dt_dataset *ds, const dt_split *sp, int index, int pad, bool try_flip,
                        const float *out, int *top, int *left, bool *flipped) {
  const size_t n = (size_t)sp->channels * sp->height * sp->width;
  float *w = malloc(n * sizeof(float));
  int matches = 0;
  for (int f = 0; f < (try_flip ? 2 : 1); f++)
    for (int t = 0; t <= 2 * pad; t++)
      for (int l = 0; l <= 2 * pad; l++) {
        window(ds, sp, index, pad, t, l, f == 1, w);
        if (same_floats(w, out, n)) {
          matches++;
          *top = t;
          *left = l;
          *flipped = f == 1;
        }
      }
  free(w);
  return matches;
}

static void check_crop_positions(int C, int H, int W, int pad, int samples_per_epoch, int epochs) {
  dt_dataset ds = make_ds(C, H, W, samples_per_epoch, 1, 10, 11);
  dt_augment_cfg aug = {.random_crop = true, .crop_padding = pad, .hflip = false, .hflip_prob = 0.5f};
  const int side = 2 * pad + 1;
  int *hits = calloc((size_t)side * side, sizeof(int));
  float *out = malloc(sizeof(float) * (size_t)C * H * W);
  for (int e = 0; e < epochs; e++)
    for (int i = 0; i < samples_per_epoch; i++) {
      dt_augment_image(&ds, &ds.train, i, &aug, 42, e, out);
      int t = -1, l = -1;
      bool f = false;
      int m = find_windows(&ds, &ds.train, i, pad, false, out, &t, &l, &f);
      if (m != 1) fail_msg("sample %d epoch %d matches %d windows", i, e, m);
      hits[t * side + l]++;
    }
  for (int p = 0; p < side * side; p++)
    if (hits[p] == 0) fail_msg("crop position (%d, %d) never drawn", p / side, p % side);
  free(hits);
  free(out);
  dt_dataset_free(&ds);
}

static void test_crop_semantics(void **state) {
  (void)state;
  /* 28x28 with padding 4: 81 positions, about 25 draws each. */
  check_crop_positions(1, 28, 28, 4, 400, 5);
  /* Three channels share one crop. */
  check_crop_positions(3, 8, 8, 2, 100, 5);
}

static void test_flip(void **state) {
  (void)state;
  dt_dataset ds = make_ds(3, 6, 6, 400, 1, 10, 12);
  const size_t n = 3 * 6 * 6;
  float out[3 * 6 * 6], plain[3 * 6 * 6], mirrored[3 * 6 * 6];
  const float probs[3] = {0.5f, 0.0f, 1.0f};
  for (int k = 0; k < 3; k++) {
    dt_augment_cfg aug = {.random_crop = false, .crop_padding = 4, .hflip = true, .hflip_prob = probs[k]};
    int flips = 0, total = 0;
    for (int e = 0; e < 10; e++)
      for (int i = 0; i < ds.train.count; i++) {
        dt_augment_image(&ds, &ds.train, i, &aug, 7, e, out);
        window(&ds, &ds.train, i, 0, 0, 0, false, plain);
        window(&ds, &ds.train, i, 0, 0, 0, true, mirrored);
        bool is_plain = same_floats(out, plain, n), is_mirror = same_floats(out, mirrored, n);
        assert_true(is_plain != is_mirror);
        flips += is_mirror;
        total++;
      }
    double rate = (double)flips / total;
    print_message("  hflip_prob %.1f: flipped %d of %d\n", (double)probs[k], flips, total);
    if (probs[k] == 0.5f)
      assert_true(rate > 0.45 && rate < 0.55); /* 6 standard deviations */
    else
      assert_true(rate == (double)probs[k]);
  }
  /* Crop and flip together: the output is the mirror of one exact window. */
  dt_augment_cfg both = {.random_crop = true, .crop_padding = 2, .hflip = true, .hflip_prob = 0.5f};
  int flipped_count = 0;
  for (int i = 0; i < 200; i++) {
    dt_augment_image(&ds, &ds.train, i, &both, 9, 1, out);
    int t = -1, l = -1;
    bool f = false;
    assert_int_equal(find_windows(&ds, &ds.train, i, 2, true, out, &t, &l, &f), 1);
    flipped_count += f;
  }
  assert_true(flipped_count > 60 && flipped_count < 140);
  dt_dataset_free(&ds);
}

static void test_normalisation_exact(void **state) {
  (void)state;
  dt_dataset ds = make_ds(3, 5, 7, 4, 6, 10, 13);
  const int n = 3 * 5 * 7;
  float out[3 * 5 * 7], off[3 * 5 * 7];
  dt_augment_cfg none = {.random_crop = false, .crop_padding = 4, .hflip = false, .hflip_prob = 0.5f};
  for (int i = 0; i < ds.test.count; i++) {
    dt_augment_image(&ds, &ds.test, i, NULL, 1, 0, out);
    const uint8_t *img = ds.test.images + (size_t)i * n;
    for (int c = 0; c < 3; c++)
      for (int p = 0; p < 35; p++) {
        float want = ((float)img[c * 35 + p] / 255.0f - ds.mean[c]) / ds.std[c];
        if (out[c * 35 + p] != want)
          fail_msg("image %d channel %d pixel %d: %.9g != %.9g", i, c, p, (double)out[c * 35 + p],
                   (double)want);
      }
    /* Augmentation switched off is the same as evaluation, whatever the seed and epoch. */
    dt_augment_image(&ds, &ds.test, i, &none, 99, 5, off);
    assert_true(same_floats(out, off, (size_t)n));
  }
  /* Endpoints: pixel 0 (padding) and 255. */
  assert_true(norm_px(&ds, 0, 0) == (0.0f - ds.mean[0]) / ds.std[0]);
  assert_true(norm_px(&ds, 2, 255) == (1.0f - ds.mean[2]) / ds.std[2]);
  dt_dataset_free(&ds);
}

/* ---- the loader ---- */

typedef struct {
  int n, global_n;
  long step, first;
  float *images, *targets;
  int *labels;
} batch_copy;

typedef struct {
  int count;
  batch_copy *b;
} epoch_copy;

static epoch_copy collect(dt_loader *ld, long epoch, long first, const dt_dataset *ds, bool train) {
  const dt_split *sp = train ? &ds->train : &ds->test;
  const size_t img = (size_t)sp->channels * sp->height * sp->width, K = (size_t)ds->classes;
  epoch_copy ec = {0, calloc((size_t)dt_loader_steps(ld) + 1, sizeof(batch_copy))};
  dt_loader_start(ld, epoch, first);
  const dt_batch *b;
  while ((b = dt_loader_next(ld))) {
    assert_true(ec.count < dt_loader_steps(ld));
    batch_copy *c = &ec.b[ec.count++];
    c->n = b->n;
    c->global_n = b->global_n;
    c->step = b->step;
    c->first = b->first;
    c->images = malloc(sizeof(float) * img * (size_t)(b->n + 1));
    c->targets = malloc(sizeof(float) * K * (size_t)(b->n + 1));
    c->labels = malloc(sizeof(int) * (size_t)(b->n + 1));
    memcpy(c->images, b->images, sizeof(float) * img * (size_t)b->n);
    memcpy(c->targets, b->targets, sizeof(float) * K * (size_t)b->n);
    memcpy(c->labels, b->labels, sizeof(int) * (size_t)b->n);
  }
  assert_null(dt_loader_next(ld)); /* stays at the end */
  return ec;
}

static void free_epoch(epoch_copy *ec) {
  for (int i = 0; i < ec->count; i++) {
    free(ec->b[i].images);
    free(ec->b[i].targets);
    free(ec->b[i].labels);
  }
  free(ec->b);
}

static dt_loader_cfg train_cfg(const dt_dataset *ds, int B, int offset, int count, int threads) {
  dt_loader_cfg cfg = {
      .ds = ds,
      .train = true,
      .aug = {.random_crop = true, .crop_padding = 2, .hflip = true, .hflip_prob = 0.5f},
      .seed = 1234,
      .global_batch = B,
      .slice_offset = offset,
      .slice_count = count,
      .threads = threads,
  };
  return cfg;
}

/* The expected batch computed directly: perm slice, dt_augment_image, one-hot. */
static void check_direct(const dt_dataset *ds, const dt_loader_cfg *cfg, long epoch, const epoch_copy *ec) {
  const int N = ds->train.count, B = cfg->global_batch, K = ds->classes;
  const size_t img = (size_t)ds->train.channels * ds->train.height * ds->train.width;
  int *perm = malloc(sizeof(int) * (size_t)N);
  dt_sampler_permutation(cfg->seed, epoch, N, perm);
  float *want = malloc(sizeof(float) * img);
  assert_int_equal(ec->count, N / B);
  for (int s = 0; s < ec->count; s++) {
    const batch_copy *c = &ec->b[s];
    assert_int_equal(c->step, s);
    assert_int_equal(c->n, cfg->slice_count);
    assert_int_equal(c->global_n, B);
    assert_int_equal(c->first, -1); /* a training batch has no test index */
    for (int i = 0; i < c->n; i++) {
      int index = perm[s * B + cfg->slice_offset + i];
      dt_augment_image(ds, &ds->train, index, &cfg->aug, cfg->seed, epoch, want);
      if (!same_floats(c->images + (size_t)i * img, want, img))
        fail_msg("epoch %ld step %d image %d differs from dt_augment_image", epoch, s, i);
      assert_int_equal(c->labels[i], ds->train.labels[index]);
      for (int k = 0; k < K; k++)
        assert_true(c->targets[(size_t)i * K + k] == (k == c->labels[i] ? 1.0f : 0.0f));
    }
  }
  free(want);
  free(perm);
}

static void test_threaded_matches_direct(void **state) {
  (void)state;
  dt_dataset ds = make_ds(3, 8, 8, 103, 10, 7, 21);
  const int threads[2] = {1, 3};
  for (int t = 0; t < 2; t++) {
    dt_loader_cfg slices[2] = {train_cfg(&ds, 10, 0, 10, threads[t]), train_cfg(&ds, 10, 3, 5, threads[t])};
    for (int s = 0; s < 2; s++) {
      dt_loader *ld = dt_loader_create(&slices[s]);
      assert_int_equal(dt_loader_steps(ld), 10);
      assert_null(dt_loader_next(ld)); /* nothing before the first start */
      for (long e = 0; e < 3; e++) {
        epoch_copy ec = collect(ld, e, 0, &ds, true);
        check_direct(&ds, &slices[s], e, &ec);
        free_epoch(&ec);
      }
      dt_loader_free(ld);
    }
  }
  dt_dataset_free(&ds);
}

static void test_world_size_invariance(void **state) {
  (void)state;
  dt_dataset ds = make_ds(1, 12, 12, 100, 10, 10, 22);
  const int B = 16;
  const size_t img = 144, K = 10;
  dt_loader_cfg one = train_cfg(&ds, B, 0, B, 2);
  dt_loader *ld1 = dt_loader_create(&one);
  for (long e = 0; e < 2; e++) {
    epoch_copy ref = collect(ld1, e, 0, &ds, true);
    assert_int_equal(ref.count, 100 / B);
    const int worlds[2] = {2, 4};
    for (int w = 0; w < 2; w++) {
      const int R = worlds[w], per = B / R;
      for (int r = 0; r < R; r++) {
        dt_loader_cfg cfg = train_cfg(&ds, B, r * per, per, 1 + r % 2);
        dt_loader *ld = dt_loader_create(&cfg);
        epoch_copy mine = collect(ld, e, 0, &ds, true);
        assert_int_equal(mine.count, ref.count);
        for (int s = 0; s < ref.count; s++) {
          assert_int_equal(mine.b[s].n, per);
          assert_int_equal(mine.b[s].global_n, B);
          assert_int_equal(mine.b[s].step, s);
          assert_memory_equal(mine.b[s].images, ref.b[s].images + (size_t)r * per * img,
                              sizeof(float) * img * (size_t)per);
          assert_memory_equal(mine.b[s].targets, ref.b[s].targets + (size_t)r * per * K,
                              sizeof(float) * K * (size_t)per);
          assert_memory_equal(mine.b[s].labels, ref.b[s].labels + (size_t)r * per,
                              sizeof(int) * (size_t)per);
        }
        free_epoch(&mine);
        dt_loader_free(ld);
      }
    }
    free_epoch(&ref);
  }
  dt_loader_free(ld1);
  dt_dataset_free(&ds);
}

/* Evaluation with the given slices of B: the ranks' batches, concatenated in rank order, must
 * be the test set in order, every image exactly once. */
static void check_eval(const dt_dataset *ds, int B, int R, const int *offsets, const int *counts) {
  const int N = ds->test.count, K = ds->classes;
  const size_t img = (size_t)ds->test.channels * ds->test.height * ds->test.width;
  epoch_copy *ranks = calloc((size_t)R, sizeof(epoch_copy));
  for (int r = 0; r < R; r++) {
    dt_loader_cfg cfg = {.ds = ds, .train = false, .seed = 5, .global_batch = B,
                         .slice_offset = offsets[r], .slice_count = counts[r], .threads = 1 + r % 3};
    cfg.aug = (dt_augment_cfg){.random_crop = true, .crop_padding = 4, .hflip = true, .hflip_prob = 1};
    dt_loader *ld = dt_loader_create(&cfg);
    assert_int_equal(dt_loader_steps(ld), (N + B - 1) / B);
    ranks[r] = collect(ld, 0, 0, ds, false);
    assert_int_equal(ranks[r].count, (N + B - 1) / B);
    dt_loader_free(ld);
  }
  int *seen = calloc((size_t)N, sizeof(int));
  float *want = malloc(sizeof(float) * img);
  int next = 0;
  for (int s = 0; s < (N + B - 1) / B; s++) {
    const int L = DT_MIN(B, N - s * B);
    int sum = 0;
    for (int r = 0; r < R; r++) {
      const batch_copy *c = &ranks[r].b[s];
      assert_int_equal(c->step, s);
      assert_int_equal(c->global_n, L);
      assert_int_equal(c->first, next); /* the test index of row 0 */
      for (int i = 0; i < c->n; i++) {
        const int index = next++;
        assert_true(index < N);
        seen[index]++;
        dt_augment_image(ds, &ds->test, index, NULL, 0, 0, want);
        if (!same_floats(c->images + (size_t)i * img, want, img))
          fail_msg("R=%d step %d rank %d item %d is not test image %d", R, s, r, i, index);
        assert_int_equal(c->labels[i], ds->test.labels[index]);
        assert_true(c->targets[(size_t)i * K + c->labels[i]] == 1.0f);
      }
      sum += c->n;
    }
    assert_int_equal(sum, L);
  }
  assert_int_equal(next, N);
  for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
  free(seen);
  free(want);
  for (int r = 0; r < R; r++) free_epoch(&ranks[r]);
  free(ranks);
}

static void test_eval_coverage(void **state) {
  (void)state;
  const int sizes[2] = {41, 37}; /* last batches of 5 and 1 images */
  for (int k = 0; k < 2; k++) {
    dt_dataset ds = make_ds(1, 6, 6, 8, sizes[k], 10, 23 + (uint64_t)k);
    const int B = 12;
    for (int R = 1; R <= 3; R++) {
      int offsets[3], counts[3];
      for (int r = 0; r < R; r++) {
        offsets[r] = r * B / R;
        counts[r] = B / R;
      }
      check_eval(&ds, B, R, offsets, counts);
    }
    /* Uneven slices that still tile the batch. */
    const int offsets[3] = {0, 3, 6}, counts[3] = {3, 3, 6};
    check_eval(&ds, B, 3, offsets, counts);
    dt_dataset_free(&ds);
  }
}

static void test_restart(void **state) {
  (void)state;
  dt_dataset ds = make_ds(3, 8, 8, 90, 10, 10, 24);
  const size_t img = 192;
  dt_loader_cfg cfg = train_cfg(&ds, 8, 2, 4, 2);
  dt_loader *ref_ld = dt_loader_create(&cfg);
  epoch_copy ref3 = collect(ref_ld, 3, 0, &ds, true);
  epoch_copy ref5 = collect(ref_ld, 5, 0, &ds, true);
  dt_loader_free(ref_ld);
  assert_int_equal(ref3.count, 11);

  dt_loader *ld = dt_loader_create(&cfg);
  /* Abandon epoch 3 after two batches, resume it at step 4. */
  dt_loader_start(ld, 3, 0);
  assert_non_null(dt_loader_next(ld));
  assert_non_null(dt_loader_next(ld));
  epoch_copy tail = collect(ld, 3, 4, &ds, true);
  assert_int_equal(tail.count, ref3.count - 4);
  for (int s = 0; s < tail.count; s++) {
    assert_int_equal(tail.b[s].step, s + 4);
    assert_memory_equal(tail.b[s].images, ref3.b[s + 4].images, sizeof(float) * img * 4);
    assert_memory_equal(tail.b[s].labels, ref3.b[s + 4].labels, sizeof(int) * 4);
  }
  free_epoch(&tail);
  /* Switch epochs mid-way, and restart before anything was consumed. */
  dt_loader_start(ld, 2, 0);
  assert_non_null(dt_loader_next(ld));
  dt_loader_start(ld, 7, 1);
  dt_loader_start(ld, 5, 0);
  epoch_copy full = collect(ld, 5, 0, &ds, true);
  assert_int_equal(full.count, ref5.count);
  for (int s = 0; s < full.count; s++)
    assert_memory_equal(full.b[s].images, ref5.b[s].images, sizeof(float) * img * 4);
  free_epoch(&full);
  /* Starting at or past the end gives an empty epoch. */
  dt_loader_start(ld, 5, 11);
  assert_null(dt_loader_next(ld));
  dt_loader_start(ld, 5, 10);
  const dt_batch *last = dt_loader_next(ld);
  assert_non_null(last);
  assert_int_equal(last->step, 10);
  assert_memory_equal(last->images, ref5.b[10].images, sizeof(float) * img * 4);
  assert_null(dt_loader_next(ld));
  dt_loader_free(ld);
  free_epoch(&ref3);
  free_epoch(&ref5);

  /* Freeing while the workers are still preparing batches. */
  dt_loader *busy = dt_loader_create(&cfg);
  dt_loader_start(busy, 0, 0);
  dt_loader_free(busy);
  dt_dataset_free(&ds);
}

static void test_steps(void **state) {
  (void)state;
  dt_dataset ds = make_ds(1, 4, 4, 100, 41, 10, 25);
  dt_loader_cfg cfg = train_cfg(&ds, 16, 0, 16, 1);
  dt_loader *ld = dt_loader_create(&cfg);
  assert_int_equal(dt_loader_steps(ld), 6);
  dt_loader_free(ld);
  cfg.train = false;
  cfg.global_batch = 12;
  cfg.slice_count = 12;
  ld = dt_loader_create(&cfg);
  assert_int_equal(dt_loader_steps(ld), 4);
  dt_loader_free(ld);
  /* A batch larger than the training set: no training steps at all. */
  cfg = train_cfg(&ds, 128, 0, 128, 2);
  ld = dt_loader_create(&cfg);
  assert_int_equal(dt_loader_steps(ld), 0);
  dt_loader_start(ld, 0, 0);
  assert_null(dt_loader_next(ld));
  dt_loader_free(ld);
  dt_dataset_free(&ds);
}

/* Counting allocator for the image buffers (a GPU backend's page-locked memory). */
static int g_image_buffers;
static void *count_alloc(void *ctx, size_t bytes) {
  assert_ptr_equal(ctx, &g_image_buffers);
  g_image_buffers++;
  return malloc(bytes);
}
static void count_free(void *ctx, void *ptr) {
  assert_ptr_equal(ctx, &g_image_buffers);
  g_image_buffers--;
  free(ptr);
}

/* dt_loader_peek: it returns what the next dt_loader_next returns, the same buffer; the current
 * batch stays untouched meanwhile; both stay untouched while the workers could run on (2 and 3
 * threads, so free slots exist); NULL at the end; the epoch matches one read without peeking.
 * The images come from the configured allocator, all returned by dt_loader_free. */
static void test_peek(void **state) {
  (void)state;
  dt_dataset ds = make_ds(1, 4, 4, 100, 41, 10, 25);
  for (int threads = 1; threads <= 3; threads++) {
    dt_loader_cfg cfg = train_cfg(&ds, 8, 2, 4, threads);
    dt_loader *plain = dt_loader_create(&cfg);
    epoch_copy want = collect(plain, 1, 0, &ds, true);
    dt_loader_free(plain);
    cfg.image_alloc = count_alloc;
    cfg.image_free = count_free;
    cfg.image_ctx = &g_image_buffers;
    dt_loader *ld = dt_loader_create(&cfg);
    assert_int_equal(g_image_buffers, threads + 1);
    const size_t img = 16, bytes = sizeof(float) * img * 4;
    float cur_copy[64], next_copy[64];
    dt_loader_start(ld, 1, 0);
    const dt_batch *b = dt_loader_next(ld);
    for (int i = 0; i < want.count; i++) {
      assert_non_null(b);
      assert_memory_equal(b->images, want.b[i].images, bytes);
      memcpy(cur_copy, b->images, bytes);
      const dt_batch *nb = dt_loader_peek(ld);
      assert_ptr_equal(nb, dt_loader_peek(ld)); /* peeking twice is one peek */
      if (i + 1 == want.count) {
        assert_null(nb);
      } else {
        assert_non_null(nb);
        assert_int_equal(nb->step, want.b[i + 1].step);
        memcpy(next_copy, nb->images, bytes);
        nanosleep(&(struct timespec){0, 2000000}, NULL); /* workers with free slots go on */
        assert_memory_equal(b->images, cur_copy, bytes);
        assert_memory_equal(nb->images, next_copy, bytes);
      }
      const dt_batch *after = dt_loader_next(ld);
      if (nb) {
        assert_ptr_equal(after, nb);
        assert_memory_equal(after->images, next_copy, bytes);
      } else {
        assert_null(after);
      }
      b = after;
    }
    /* A restart forgets a peek. */
    dt_loader_start(ld, 1, 0);
    assert_non_null(dt_loader_peek(ld));
    dt_loader_start(ld, 1, 0);
    b = dt_loader_next(ld);
    assert_memory_equal(b->images, want.b[0].images, bytes);
    dt_loader_free(ld);
    assert_int_equal(g_image_buffers, 0);
    free_epoch(&want);
  }
  dt_dataset_free(&ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peek),
      cmocka_unit_test(test_permutation),
      cmocka_unit_test(test_crop_semantics),
      cmocka_unit_test(test_flip),
      cmocka_unit_test(test_normalisation_exact),
      cmocka_unit_test(test_steps),
      cmocka_unit_test(test_threaded_matches_direct),
      cmocka_unit_test(test_world_size_invariance),
      cmocka_unit_test(test_eval_coverage),
      cmocka_unit_test(test_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
