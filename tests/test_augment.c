/* test_augment.c: the augmentations and losses of docs/reference-experiments.md "Augmentations and
 * losses" on small synthetic datasets. Cutout, Random Erasing and Dual-Cutout masks are recomputed
 * here from the documented draw order (loader.h) and formulas (docs/reference-experiments.md
 * "Augmentations and losses"), pixel for pixel; the mixing draws of mixup, RICAP and CutMix
 * likewise (numpy rounding done by hand), and the loader's mixed images and soft targets are
 * rebuilt from them. Also: invariants (target rows sum to 1, RICAP areas and weights, clipped
 * Cutout boxes, Random Erasing bounds), world-size invariance of every method, label smoothing
 * values, the Gamma and Beta samplers' moments, the PNG writer (decoded with zlib) and
 * --dump-batch's files and error path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"
#include "data/loader.h"
#include "dump_batch.h"
#include "rng.h"
#include "testutil.h"

enum { C_ = 3, H_ = 12, W_ = 10, K_ = 5, NTRAIN = 100 };
#define F_ ((size_t)C_ * H_ * W_)

/* Random pixels in 1..255 and labels; H != W so that swapped axes show. */
static dt_dataset make_ds(int C, int H, int W, int ntrain, int classes, uint64_t seed) {
  dt_dataset ds;
  memset(&ds, 0, sizeof ds);
  ds.name = "synthetic";
  ds.classes = classes;
  for (int c = 0; c < 3; c++) {
    ds.mean[c] = 0.25f + 0.125f * (float)c;
    ds.std[c] = 0.3f - 0.05f * (float)c;
  }
  dt_rng r = dt_rng_key(seed, 91, 0, 0);
  dt_split *splits[2] = {&ds.train, &ds.test};
  int counts[2] = {ntrain, 10};
  for (int s = 0; s < 2; s++) {
    dt_split *sp = splits[s];
    sp->count = counts[s];
    sp->channels = C, sp->height = H, sp->width = W;
    size_t px = (size_t)counts[s] * C * H * W;
    sp->images = malloc(px);
    sp->labels = malloc((size_t)counts[s]);
    for (size_t i = 0; i < px; i++) sp->images[i] = (uint8_t)(1 + dt_rng_below(&r, 255));
    for (int i = 0; i < counts[s]; i++) sp->labels[i] = (uint8_t)dt_rng_below(&r, (uint64_t)classes);
  }
  return ds;
}

static void free_ds(dt_dataset *ds) {
  free(ds->train.images);
  free(ds->train.labels);
  free(ds->test.images);
  free(ds->test.labels);
}

static const dt_augment_cfg k_aug = {.random_crop = true, .crop_padding = 2, .hflip = true, .hflip_prob = 0.5f};

/* The stream of one image after the crop and flip draws. */
static dt_rng after_geometry(const dt_augment_cfg *aug, uint64_t seed, long epoch, int index) {
  dt_rng r = dt_rng_key(seed, DT_RNG_AUGMENT, (uint64_t)epoch, (uint64_t)index);
  if (aug->random_crop) {
    dt_rng_below(&r, (uint64_t)(2 * aug->crop_padding + 1));
    dt_rng_below(&r, (uint64_t)(2 * aug->crop_padding + 1));
  }
  if (aug->hflip) dt_rng_uniform(&r);
  return r;
}

typedef struct {
  bool on;
  int x0, x1, y0, y1; /* [x0, x1) x [y0, y1) */
  int cx, cy;
  float v;
} rect;

static bool in_rect(const rect *b, int y, int x) {
  return b->on && x >= b->x0 && x < b->x1 && y >= b->y0 && y < b->y1;
}

/* Cutout (docs/reference-experiments.md "Augmentations and losses"): centre from [0, S + off) or
 * [m/2, S + off - m/2), off = 1 for even m. */
static rect draw_cutout(dt_rng *r, const dt_erase_cfg *e, int H, int W) {
  rect b = {0};
  if (dt_rng_uniform(r) > e->cutout_prob) return b;
  const int m = e->cutout_size, even = m % 2 == 0;
  const int lo = e->cutout_inside ? m / 2 : 0;
  const int hix = W + even - (e->cutout_inside ? m / 2 : 0), hiy = H + even - (e->cutout_inside ? m / 2 : 0);
  b.on = true;
  b.cx = lo + (int)dt_rng_below(r, (uint64_t)(hix - lo));
  b.cy = lo + (int)dt_rng_below(r, (uint64_t)(hiy - lo));
  b.x0 = b.cx - m / 2, b.x1 = b.x0 + m, b.y0 = b.cy - m / 2, b.y1 = b.y0 + m;
  if (b.x0 < 0) b.x0 = 0;
  if (b.y0 < 0) b.y0 = 0;
  if (b.x1 > W) b.x1 = W;
  if (b.y1 > H) b.y1 = H;
  b.v = 0.0f;
  return b;
}

/* Random Erasing (docs/reference-experiments.md "Augmentations and losses"). */
static rect draw_erasing(dt_rng *r, const dt_erase_cfg *e, int H, int W) {
  rect b = {0};
  if (dt_rng_uniform(r) > e->erasing_prob) return b;
  for (int a = 0; a < e->erasing_max_attempts; a++) {
    double area = (e->erasing_area_min + (e->erasing_area_max - e->erasing_area_min) * dt_rng_uniform(r)) * H * W;
    double lo = e->erasing_min_aspect, hi = 1.0 / e->erasing_min_aspect;
    double ratio = lo + (hi - lo) * dt_rng_uniform(r);
    int h = (int)floor(sqrt(area * ratio)), w = (int)floor(sqrt(area / ratio));
    if (w < W && h < H) {
      b.on = true;
      b.x0 = (int)dt_rng_below(r, (uint64_t)(W - w));
      b.y0 = (int)dt_rng_below(r, (uint64_t)(H - h));
      b.x1 = b.x0 + w, b.y1 = b.y0 + h;
      b.v = (float)dt_rng_uniform(r);
      return b;
    }
  }
  return b;
}

static void apply_rect(const rect *b, float *img, int C, int H, int W) {
  for (int c = 0; c < C; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++)
        if (in_rect(b, y, x)) img[((size_t)c * H + y) * W + x] = b->v;
}

/* ---- per-image ---- */

static void test_cutout_exact(void **state) {
  (void)state;
  dt_dataset ds = make_ds(C_, H_, W_, NTRAIN, K_, 1);
  float base[F_], got[F_], want[F_];
  const int sizes[4] = {6, 5, 4, 7};
  for (int v = 0; v < 4; v++) {
    dt_erase_cfg e = {.cutout = true, .cutout_prob = v < 2 ? 1.0 : 0.6, .cutout_size = sizes[v],
                      .cutout_inside = v % 2 == 1};
    int applied = 0, clipped = 0, centre_max = 0, draws = 0;
    for (long epoch = 0; epoch < 3; epoch++)
      for (int i = 0; i < NTRAIN; i++) {
        dt_augment_image(&ds, &ds.train, i, &k_aug, 11, epoch, base);
        dt_augment_views(&ds, &ds.train, i, &k_aug, &e, 11, epoch, got, NULL);
        dt_rng r = after_geometry(&k_aug, 11, epoch, i);
        rect b = draw_cutout(&r, &e, H_, W_);
        memcpy(want, base, sizeof want);
        apply_rect(&b, want, C_, H_, W_);
        if (memcmp(got, want, sizeof got) != 0) fail_msg("cutout size %d epoch %ld image %d differs", sizes[v], epoch, i);
        draws++;
        if (!b.on) continue;
        applied++;
        const int m = sizes[v];
        bool cut = b.x1 - b.x0 < m || b.y1 - b.y0 < m;
        clipped += cut;
        if (e.cutout_inside) assert_false(cut);
        centre_max = b.cx > centre_max ? b.cx : centre_max;
      }
    if (e.cutout_prob == 1.0) assert_int_equal(applied, draws);
    else assert_true(fabs((double)applied / draws - 0.6) < 0.1);
    if (!e.cutout_inside) {
      /* the centre reaches the border (W for even sizes), so many boxes are clipped */
      assert_true(clipped > draws / 4);
      assert_int_equal(centre_max, W_ - (sizes[v] % 2 == 1));
    } else {
      assert_int_equal(centre_max, W_ + (sizes[v] % 2 == 0) - sizes[v] / 2 - 1);
    }
  }
  free_ds(&ds);
}

static void test_erasing_exact(void **state) {
  (void)state;
  dt_dataset ds = make_ds(C_, H_, W_, NTRAIN, K_, 2);
  float base[F_], got[F_], want[F_];
  dt_erase_cfg e = {.random_erasing = true, .erasing_prob = 0.5, .erasing_area_min = 0.02,
                    .erasing_area_max = 0.4, .erasing_min_aspect = 0.3, .erasing_max_attempts = 20};
  for (int both = 0; both < 2; both++) {
    /* both: Cutout first, then Random Erasing (reference order), from the same stream */
    e.cutout = both, e.cutout_prob = 1, e.cutout_size = 4;
    int erased = 0, draws = 0;
    for (long epoch = 0; epoch < 4; epoch++)
      for (int i = 0; i < NTRAIN; i++) {
        dt_augment_image(&ds, &ds.train, i, &k_aug, 5, epoch, base);
        dt_augment_views(&ds, &ds.train, i, &k_aug, &e, 5, epoch, got, NULL);
        dt_rng r = after_geometry(&k_aug, 5, epoch, i);
        memcpy(want, base, sizeof want);
        if (both) {
          rect cb = draw_cutout(&r, &e, H_, W_);
          apply_rect(&cb, want, C_, H_, W_);
        }
        rect b = draw_erasing(&r, &e, H_, W_);
        apply_rect(&b, want, C_, H_, W_);
        if (memcmp(got, want, sizeof got) != 0) fail_msg("erasing epoch %ld image %d differs", epoch, i);
        draws++;
        if (!b.on) continue;
        erased++;
        const int w = b.x1 - b.x0, h = b.y1 - b.y0;
        /* bounds: strictly smaller than the image, never touching the right or bottom edge,
         * area at most the largest fraction, one value in [0, 1) */
        assert_true(w < W_ && h < H_ && b.x1 <= W_ - 1 && b.y1 <= H_ - 1);
        assert_true(w * h <= 0.4 * H_ * W_);
        assert_true(b.v >= 0 && b.v < 1);
      }
    assert_true(fabs((double)erased / draws - 0.5) < 0.1);
  }
  free_ds(&ds);
}

static void test_dual_cutout(void **state) {
  (void)state;
  dt_dataset ds = make_ds(C_, H_, W_, NTRAIN, K_, 3);
  float base[F_], v1[F_], v2[F_], alone[F_], want1[F_], want2[F_];
  dt_erase_cfg e = {.dual_cutout = true, .cutout_prob = 1, .cutout_size = 4, .random_erasing = true,
                    .erasing_prob = 0.5, .erasing_area_min = 0.02, .erasing_area_max = 0.4,
                    .erasing_min_aspect = 0.3, .erasing_max_attempts = 20};
  int differ = 0;
  for (int i = 0; i < NTRAIN; i++) {
    dt_augment_image(&ds, &ds.train, i, &k_aug, 8, 1, base);
    dt_augment_views(&ds, &ds.train, i, &k_aug, &e, 8, 1, v1, v2);
    dt_augment_views(&ds, &ds.train, i, &k_aug, &e, 8, 1, alone, NULL);
    assert_memory_equal(v1, alone, sizeof v1); /* view 1 does not depend on asking for view 2 */
    /* one erasing shared by both views, then one Cutout draw per view */
    dt_rng r = after_geometry(&k_aug, 8, 1, i);
    rect er = draw_erasing(&r, &e, H_, W_);
    rect c1 = draw_cutout(&r, &e, H_, W_), c2 = draw_cutout(&r, &e, H_, W_);
    memcpy(want1, base, sizeof base);
    apply_rect(&er, want1, C_, H_, W_);
    memcpy(want2, want1, sizeof base);
    apply_rect(&c1, want1, C_, H_, W_);
    apply_rect(&c2, want2, C_, H_, W_);
    assert_memory_equal(v1, want1, sizeof v1);
    assert_memory_equal(v2, want2, sizeof v2);
    differ += memcmp(v1, v2, sizeof v1) != 0;
    /* outside both boxes the two views are the same crop and flip of the image */
    for (int c = 0; c < C_; c++)
      for (int y = 0; y < H_; y++)
        for (int x = 0; x < W_; x++) {
          size_t o = ((size_t)c * H_ + y) * W_ + x;
          if (!in_rect(&c1, y, x) && !in_rect(&c2, y, x)) assert_true(v1[o] == v2[o]);
          if (in_rect(&c1, y, x)) assert_true(v1[o] == 0.0f);
        }
  }
  assert_true(differ > NTRAIN * 9 / 10);
  free_ds(&ds);
}

/* ---- samplers ---- */

static void test_gamma_beta_moments(void **state) {
  (void)state;
  enum { N = 20000 };
  const double shapes[4] = {0.3, 1.0, 4.5, 0.05};
  for (int s = 0; s < 4; s++) {
    dt_rng r = dt_rng_key(3, 99, (uint64_t)s, 0);
    double sum = 0, sq = 0;
    for (int i = 0; i < N; i++) {
      double g = exp(dt_mix_log_gamma(&r, shapes[s]));
      assert_true(g >= 0 && isfinite(g));
      sum += g, sq += g * g;
    }
    double mean = sum / N, var = sq / N - mean * mean, k = shapes[s];
    /* Gamma(k, 1): mean k, variance k, fourth central moment 3k^2 + 6k; allow 5 standard
     * errors of the sample mean and 6 of the sample variance */
    if (fabs(mean - k) > 5 * sqrt(k / N) || fabs(var - k) > 6 * sqrt((2 * k * k + 6 * k) / N))
      fail_msg("Gamma(%g): mean %g variance %g", k, mean, var);
  }
  const double ab[5][2] = {{1, 1}, {0.3, 0.3}, {2, 5}, {0.5, 0.5}, {0.01, 0.01}};
  for (int s = 0; s < 5; s++) {
    dt_rng r = dt_rng_key(4, 99, (uint64_t)s, 0);
    const double a = ab[s][0], b = ab[s][1];
    double sum = 0, sq = 0;
    for (int i = 0; i < N; i++) {
      double x = dt_mix_beta(&r, a, b);
      assert_true(x >= 0 && x <= 1);
      sum += x, sq += x * x;
    }
    double mean = sum / N, var = sq / N - mean * mean;
    double m = a / (a + b), v = a * b / ((a + b) * (a + b) * (a + b + 1));
    if (fabs(mean - m) > 5 * sqrt(v / N) || fabs(var - v) > 0.05 * v)
      fail_msg("Beta(%g, %g): mean %g (want %g) variance %g (want %g)", a, b, mean, m, var, v);
  }
}

/* ---- batch mixing ---- */

/* numpy's round: to nearest, ties to even. */
static int round_half_even(double x) {
  double f = floor(x), d = x - f;
  if (d > 0.5) return (int)f + 1;
  if (d < 0.5) return (int)f;
  return ((long)f % 2 == 0) ? (int)f : (int)f + 1;
}

static void fisher_yates(dt_rng *r, int n, int *p) {
  for (int i = 0; i < n; i++) p[i] = i;
  for (int i = n - 1; i > 0; i--) {
    int j = (int)dt_rng_below(r, (uint64_t)i + 1);
    int t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
}

static void test_mix_draws(void **state) {
  (void)state;
  enum { B = 24 };
  int perm[4][B];
  dt_mix_params p;
  dt_mix_params_init(&p, B);
  assert_int_equal(round_half_even(2.5), 2);
  assert_int_equal(round_half_even(3.5), 4);
  int clipped = 0, ricap_edges = 0;
  for (long step = 0; step < 200; step++) {
    /* mixup: permutation, then lambda */
    dt_mix_cfg mix = {.kind = DT_MIX_MIXUP, .alpha = 0.4};
    dt_mix_draw(&mix, 17, 2, step, H_, W_, &p);
    dt_rng r = dt_rng_key(17, DT_RNG_BATCH, 2, (uint64_t)step);
    fisher_yates(&r, B, perm[0]);
    double lambda = dt_mix_beta(&r, 0.4, 0.4);
    assert_memory_equal(p.perm[0], perm[0], sizeof perm[0]);
    assert_true(p.lambda == lambda);

    /* CutMix: permutation, lambda, centre, box of side S sqrt(1 - lambda) rounded */
    mix = (dt_mix_cfg){.kind = DT_MIX_CUTMIX, .alpha = 1.0};
    dt_mix_draw(&mix, 17, 2, step, H_, W_, &p);
    r = dt_rng_key(17, DT_RNG_BATCH, 2, (uint64_t)step);
    fisher_yates(&r, B, perm[0]);
    lambda = dt_mix_beta(&r, 1.0, 1.0);
    double cx = W_ * dt_rng_uniform(&r), cy = H_ * dt_rng_uniform(&r);
    double w = W_ * sqrt(1 - lambda), h = H_ * sqrt(1 - lambda);
    assert_memory_equal(p.perm[0], perm[0], sizeof perm[0]);
    assert_true(p.lambda == lambda);
    assert_int_equal(p.box_x0, round_half_even(cx - w / 2 > 0 ? cx - w / 2 : 0));
    assert_int_equal(p.box_x1, round_half_even(cx + w / 2 < W_ ? cx + w / 2 : W_));
    assert_int_equal(p.box_y0, round_half_even(cy - h / 2 > 0 ? cy - h / 2 : 0));
    assert_int_equal(p.box_y1, round_half_even(cy + h / 2 < H_ ? cy + h / 2 : H_));
    clipped += cx - w / 2 < 0 || cx + w / 2 > W_ || cy - h / 2 < 0 || cy + h / 2 > H_;

    /* RICAP: two ratios, then per patch a permutation and an inclusive offset */
    mix = (dt_mix_cfg){.kind = DT_MIX_RICAP, .alpha = 0.3};
    dt_mix_draw(&mix, 17, 2, step, H_, W_, &p);
    r = dt_rng_key(17, DT_RNG_BATCH, 2, (uint64_t)step);
    double rw = dt_mix_beta(&r, 0.3, 0.3), rh = dt_mix_beta(&r, 0.3, 0.3);
    int w0 = round_half_even(W_ * rw), h0 = round_half_even(H_ * rh);
    int ws[4] = {w0, W_ - w0, w0, W_ - w0}, hs[4] = {h0, h0, H_ - h0, H_ - h0};
    int area = 0;
    double weight = 0;
    for (int k = 0; k < 4; k++) {
      fisher_yates(&r, B, perm[k]);
      int x0 = (int)dt_rng_below(&r, (uint64_t)(W_ - ws[k] + 1));
      int y0 = (int)dt_rng_below(&r, (uint64_t)(H_ - hs[k] + 1));
      assert_memory_equal(p.perm[k], perm[k], sizeof perm[k]);
      assert_int_equal(p.w[k], ws[k]);
      assert_int_equal(p.h[k], hs[k]);
      assert_int_equal(p.x0[k], x0);
      assert_int_equal(p.y0[k], y0);
      assert_int_equal(p.px[k], k % 2 ? w0 : 0);
      assert_int_equal(p.py[k], k / 2 ? h0 : 0);
      assert_true(p.x0[k] + p.w[k] <= W_ && p.y0[k] + p.h[k] <= H_);
      assert_true(fabs(p.weight[k] - (double)ws[k] * hs[k] / (H_ * W_)) < 1e-15);
      area += p.w[k] * p.h[k];
      weight += p.weight[k];
    }
    assert_int_equal(area, H_ * W_);
    assert_true(fabs(weight - 1) < 1e-12);
    ricap_edges += w0 == 0 || w0 == W_ || h0 == 0 || h0 == H_;
  }
  assert_true(clipped > 0);      /* the CutMix box is clipped at the border now and then */
  assert_true(ricap_edges > 0);  /* Beta(0.3, 0.3) puts mass near 0 and 1: empty patches occur */
  dt_mix_params_free(&p);
}

static dt_loader_cfg loader_cfg(const dt_dataset *ds, int B, int offset, int count, int threads) {
  return (dt_loader_cfg){.ds = ds, .train = true, .aug = k_aug, .seed = 23, .global_batch = B,
                         .slice_offset = offset, .slice_count = count, .threads = threads};
}

static const dt_erase_cfg k_erase = {.cutout = true, .cutout_prob = 0.5, .cutout_size = 4,
                                     .random_erasing = true, .erasing_prob = 0.5,
                                     .erasing_area_min = 0.02, .erasing_area_max = 0.4,
                                     .erasing_min_aspect = 0.3, .erasing_max_attempts = 20};

static void check_row_sums(const dt_batch *b, int K) {
  for (int i = 0; i < b->n; i++) {
    double s = 0;
    for (int k = 0; k < K; k++) {
      assert_true(b->targets[(size_t)i * K + k] >= 0);
      s += b->targets[(size_t)i * K + k];
    }
    if (fabs(s - 1) > 1e-6) fail_msg("target row %d sums to %.9g", i, s);
  }
}

/* The loader's mixed batches rebuilt from dt_mix_draw and dt_augment_views. */
static void test_mixed_batches(void **state) {
  (void)state;
  enum { B = 16 };
  dt_dataset ds = make_ds(C_, H_, W_, NTRAIN, K_, 4);
  const dt_mix_kind kinds[3] = {DT_MIX_MIXUP, DT_MIX_CUTMIX, DT_MIX_RICAP};
  int perm[NTRAIN];
  static float src[4][F_], want[F_];
  for (int m = 0; m < 3; m++) {
    dt_mix_cfg mix = {.kind = kinds[m], .alpha = m == 2 ? 0.3 : 1.0};
    dt_loader_cfg lc = loader_cfg(&ds, B, 0, B, 2);
    dt_loader *ld = dt_loader_create_train(&lc, &k_erase, &mix);
    dt_mix_params p;
    dt_mix_params_init(&p, B);
    for (long epoch = 0; epoch < 2; epoch++) {
      dt_loader_start(ld, epoch, 0);
      dt_sampler_permutation(23, epoch, NTRAIN, perm);
      const dt_batch *b;
      long step = 0;
      while ((b = dt_loader_next(ld)) != NULL) {
        assert_int_equal(b->step, step);
        assert_true(b->mixed);
        assert_null(b->images2);
        check_row_sums(b, K_);
        dt_mix_draw(&mix, 23, epoch, step, H_, W_, &p);
        const int *index = perm + step * B;
        for (int g = 0; g < B; g++) {
          /* mixup, CutMix: image g and its partner; RICAP: the four patch sources */
          const bool ricap = kinds[m] == DT_MIX_RICAP;
          const int nsrc = ricap ? 4 : 2;
          int pos[4] = {g, p.perm[0][g], 0, 0};
          if (ricap)
            for (int k = 0; k < 4; k++) pos[k] = p.perm[k][g];
          for (int k = 0; k < nsrc; k++)
            dt_augment_views(&ds, &ds.train, index[pos[k]], &k_aug, &k_erase, 23, epoch, src[k], NULL);
          const float l = (float)p.lambda, ml = (float)(1.0 - p.lambda);
          for (int c = 0; c < C_; c++)
            for (int y = 0; y < H_; y++)
              for (int x = 0; x < W_; x++) {
                const size_t o = ((size_t)c * H_ + y) * W_ + x;
                if (kinds[m] == DT_MIX_MIXUP) {
                  want[o] = l * src[0][o] + ml * src[1][o];
                } else if (kinds[m] == DT_MIX_CUTMIX) {
                  bool in = x >= p.box_x0 && x < p.box_x1 && y >= p.box_y0 && y < p.box_y1;
                  want[o] = in ? src[1][o] : src[0][o];
                } else {
                  /* patch k by quadrant of the boundary (w0, h0) */
                  const int k = (y >= p.h[0]) * 2 + (x >= p.w[0]);
                  const int sy = p.y0[k] + y - (k / 2 ? p.h[0] : 0), sx = p.x0[k] + x - (k % 2 ? p.w[0] : 0);
                  want[o] = src[k][((size_t)c * H_ + sy) * W_ + sx];
                }
              }
          if (memcmp(b->images + (size_t)g * F_, want, sizeof want) != 0)
            fail_msg("kind %d epoch %ld step %ld row %d: image differs", (int)kinds[m], epoch, step, g);
          /* targets */
          const int y = ds.train.labels[index[g]];
          assert_int_equal(b->labels[g], y);
          float t[K_] = {0};
          if (kinds[m] == DT_MIX_RICAP) {
            double acc[K_] = {0};
            for (int k = 0; k < 4; k++)
              acc[ds.train.labels[index[p.perm[k][g]]]] += (double)p.w[k] * p.h[k] / (H_ * W_);
            for (int k = 0; k < K_; k++) t[k] = (float)acc[k];
          } else {
            const int yp = ds.train.labels[index[p.perm[0][g]]];
            if (yp == y) {
              t[y] = 1.0f;
            } else {
              t[y] = (float)p.lambda; /* the sampled lambda, not the clipped box area */
              t[yp] = (float)(1.0 - p.lambda);
            }
          }
          for (int k = 0; k < K_; k++)
            if (fabsf(b->targets[(size_t)g * K_ + k] - t[k]) > 1e-7f)
              fail_msg("kind %d row %d class %d: target %g, want %g", (int)kinds[m], g, k,
                       (double)b->targets[(size_t)g * K_ + k], (double)t[k]);
        }
        step++;
      }
      assert_int_equal(step, NTRAIN / B);
    }
    dt_mix_params_free(&p);
    dt_loader_free(ld);
  }
  free_ds(&ds);
}

static void test_label_smoothing(void **state) {
  (void)state;
  enum { B = 10 };
  dt_dataset ds = make_ds(1, 8, 8, 40, 7, 5);
  const double eps[3] = {0.1, 0.001, 0};
  for (int e = 0; e < 3; e++) {
    dt_mix_cfg mix = {.kind = DT_MIX_NONE, .label_smoothing = eps[e]};
    dt_loader_cfg lc = loader_cfg(&ds, B, 0, B, 1);
    dt_loader *ld = dt_loader_create_train(&lc, NULL, &mix);
    dt_loader_start(ld, 0, 0);
    const dt_batch *b = dt_loader_next(ld);
    assert_false(b->mixed);
    check_row_sums(b, 7);
    for (int i = 0; i < b->n; i++)
      for (int k = 0; k < 7; k++) {
        /* true class 1 - eps + eps/K, every other eps/K */
        float want = k == b->labels[i] ? (float)(1 - eps[e] + eps[e] / 7) : (float)(eps[e] / 7);
        assert_true(b->targets[i * 7 + k] == want);
      }
    if (eps[e] == 0.1) assert_true(fabsf(b->targets[b->labels[0]] - 0.9142857f) < 1e-6f);
    if (eps[e] == 0) assert_true(b->targets[b->labels[0]] == 1.0f);
    dt_loader_free(ld);
  }
  free_ds(&ds);
}

/* Ranks 1, 2 and 4: the slices concatenate to the single-rank global batch bit for bit, for
 * every method (the mixing is drawn per global batch, partners outside the slice included). */
static void test_world_size_invariance(void **state) {
  (void)state;
  enum { B = 16, STEPS = NTRAIN / B };
  dt_dataset ds = make_ds(C_, H_, W_, NTRAIN, K_, 6);
  dt_erase_cfg dual = k_erase;
  dual.cutout = false, dual.dual_cutout = true, dual.cutout_prob = 1;
  struct {
    dt_mix_cfg mix;
    const dt_erase_cfg *erase;
  } cases[5] = {
      {{.kind = DT_MIX_MIXUP, .alpha = 1}, &k_erase},
      {{.kind = DT_MIX_RICAP, .alpha = 0.3}, &k_erase},
      {{.kind = DT_MIX_CUTMIX, .alpha = 1}, &k_erase},
      {{.kind = DT_MIX_NONE, .label_smoothing = 0.1}, &k_erase},
      {{.kind = DT_MIX_NONE}, &dual},
  };
  static float images[STEPS][B][F_], images2[STEPS][B][F_], targets[STEPS][B][K_];
  static int labels[STEPS][B];
  for (int c = 0; c < 5; c++) {
    const bool two = cases[c].erase->dual_cutout;
    for (int R = 1; R <= 4; R *= 2) {
      const int per = B / R;
      for (int rank = 0; rank < R; rank++) {
        dt_loader_cfg lc = loader_cfg(&ds, B, rank * per, per, 1 + rank % 2);
        dt_loader *ld = dt_loader_create_train(&lc, cases[c].erase, &cases[c].mix);
        dt_loader_start(ld, 3, 0);
        for (int s = 0; s < STEPS; s++) {
          const dt_batch *b = dt_loader_next(ld);
          assert_non_null(b);
          assert_int_equal(b->n, per);
          assert_int_equal(b->global_n, B);
          assert_true((b->images2 != NULL) == two);
          const size_t img = sizeof(float) * per * F_, tgt = sizeof(float) * per * K_;
          if (R == 1) {
            memcpy(images[s], b->images, img);
            if (two) memcpy(images2[s], b->images2, img);
            memcpy(targets[s], b->targets, tgt);
            memcpy(labels[s], b->labels, sizeof(int) * per);
            continue;
          }
          if (memcmp(images[s][rank * per], b->images, img) != 0 ||
              (two && memcmp(images2[s][rank * per], b->images2, img) != 0) ||
              memcmp(targets[s][rank * per], b->targets, tgt) != 0 ||
              memcmp(labels[s] + rank * per, b->labels, sizeof(int) * per) != 0)
            fail_msg("case %d, %d ranks: rank %d step %d differs from the single-rank batch", c, R, rank, s);
        }
        assert_null(dt_loader_next(ld));
        dt_loader_free(ld);
      }
    }
  }
  free_ds(&ds);
}

/* ---- PNG and --dump-batch ---- */

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)len + 1);
  *n = fread(buf, 1, (size_t)len, f);
  fclose(f);
  buf[*n] = 0;
  return buf;
}

/* Decode the PNG that dt_png_write makes (one IDAT, filter 0) and compare its pixels. */
static void check_png(const char *path, const uint8_t *rgb, int w, int h) {
  size_t n;
  uint8_t *buf = read_all(path, &n);
  assert_non_null(buf);
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  assert_memory_equal(buf, sig, 8);
  size_t pos = 8;
  uint8_t *raw = NULL;
  bool ihdr = false, iend = false;
  while (pos + 12 <= n) {
    uint32_t len = be32(buf + pos);
    const uint8_t *type = buf + pos + 4, *data = buf + pos + 8;
    assert_true(pos + 12 + len <= n);
    uint32_t crc = (uint32_t)crc32(crc32(0L, type, 4), data, len);
    assert_int_equal(crc, be32(data + len));
    if (memcmp(type, "IHDR", 4) == 0) {
      assert_int_equal(len, 13);
      assert_int_equal(be32(data), (uint32_t)w);
      assert_int_equal(be32(data + 4), (uint32_t)h);
      assert_int_equal(data[8], 8);
      assert_int_equal(data[9], 2);
      ihdr = true;
    } else if (memcmp(type, "IDAT", 4) == 0) {
      uLongf raw_len = (uLongf)(3 * w + 1) * h;
      raw = malloc(raw_len);
      assert_int_equal(uncompress(raw, &raw_len, data, len), Z_OK);
      assert_int_equal(raw_len, (uLongf)(3 * w + 1) * h);
    } else if (memcmp(type, "IEND", 4) == 0) {
      iend = true;
    }
    pos += 12 + len;
  }
  assert_true(ihdr && iend && raw && pos == n);
  for (int y = 0; y < h; y++) {
    assert_int_equal(raw[(size_t)y * (3 * w + 1)], 0);
    assert_memory_equal(raw + (size_t)y * (3 * w + 1) + 1, rgb + (size_t)y * 3 * w, (size_t)3 * w);
  }
  free(raw);
  free(buf);
}

static void test_png_write(void **state) {
  (void)state;
  char *dir = tu_tmpdir("augment");
  char path[512];
  snprintf(path, sizeof path, "%s/t.png", dir);
  enum { w = 37, h = 11 };
  uint8_t rgb[w * h * 3];
  for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 7 + i / 5);
  assert_int_equal(dt_png_write(path, rgb, w, h), DT_OK);
  check_png(path, rgb, w, h);
  snprintf(path, sizeof path, "%s/no/such/dir/t.png", dir);
  dt_error_clear();
  assert_int_equal(dt_png_write(path, rgb, w, h), DT_ERR_IO);
  assert_non_null(strstr(dt_error_message(), path));
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  tu_run(cmd, NULL);
  free(dir);
}

static void test_dump_batch(void **state) {
  (void)state;
  const char *fm = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
  if (access(fm, R_OK) != 0) skip();
  char *dir = tu_tmpdir("augment-dump");
  dt_config cfg;
  dt_config_defaults(&cfg);
  assert_int_equal(dt_config_set(&cfg, "train.batch_size=16"), DT_OK);
  assert_int_equal(dt_config_set(&cfg, "augment.ricap=true"), DT_OK);
  char path[512], txt[512], cmd[700];
  snprintf(path, sizeof path, "%s/batch.png", dir);
  snprintf(txt, sizeof txt, "%s/batch.txt", dir);
  assert_int_equal(dt_dump_batch(&cfg, path), DT_OK);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  size_t n;
  char *text = (char *)read_all(txt, &n);
  assert_non_null(text);
  assert_non_null(strstr(text, "ricap: beta 0.3"));
  /* 16 tiles, each listed with weights that sum to 1 */
  int tiles = 0;
  for (char *line = strstr(text, "\n0 0 0 "); line; line = strchr(line + 1, '\n')) {
    if (line[1] == 0) break;
    double sum = 0;
    for (char *p = strchr(line + 1, ':'); p && p < strchr(line + 1, '\n'); p = strchr(p + 1, ':'))
      sum += strtod(p + 1, NULL);
    assert_true(fabs(sum - 1) < 1e-5);
    tiles++;
  }
  assert_int_equal(tiles, 16);
  free(text);
  /* no temporary files left; an unwritable path fails with one message and leaves nothing */
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", dir);
  char *out = NULL;
  tu_run(cmd, &out);
  assert_int_equal(atoi(out), 0);
  free(out);
  snprintf(path, sizeof path, "%s/missing/batch.png", dir);
  dt_error_clear();
  assert_int_equal(dt_dump_batch(&cfg, path), DT_ERR_IO);
  assert_non_null(strstr(dt_error_message(), "missing/batch.png"));
  assert_int_equal(access(path, F_OK), -1);
  dt_config_free(&cfg);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  tu_run(cmd, NULL);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cutout_exact),
      cmocka_unit_test(test_erasing_exact),
      cmocka_unit_test(test_dual_cutout),
      cmocka_unit_test(test_gamma_beta_moments),
      cmocka_unit_test(test_mix_draws),
      cmocka_unit_test(test_mixed_batches),
      cmocka_unit_test(test_label_smoothing),
      cmocka_unit_test(test_world_size_invariance),
      cmocka_unit_test(test_png_write),
      cmocka_unit_test(test_dump_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
