/* augment.c: the per-image training pipeline of docs/reference-experiments.md "Augmentations and
 * losses" in the reference order
 * Crop -> Flip -> Normalise -> Cutout -> RandomErasing -> Dual-Cutout, every step drawing from
 * the one stream dt_rng_key(seed, DT_RNG_AUGMENT, epoch, sample index) in the order loader.h
 * documents, so that an image never depends on the rank or thread that makes it. */
#include <math.h>
#include <string.h>

#include "data/loader.h"

/* numpy's randint(lo, hi) with hi > lo: uniform in [lo, hi). */
static int dt_augment_randint(dt_rng *r, int lo, int hi) {
  return lo + (int)dt_rng_below(r, (uint64_t)(hi - lo));
}

/* Crop origin and flip from the stream, then normalise into out (C, H, W). */
static void dt_augment_geometry(const dt_dataset *ds, const dt_split *split, int index,
                                const dt_augment_cfg *aug, dt_rng *r, float *out) {
  const int C = split->channels, H = split->height, W = split->width;
  const uint8_t *src = split->images + (size_t)index * C * H * W; // (C, H, W)
  /* Crop origin in the padded image, (pad, pad) = no shift; torchvision draws top, then left. */
  int top = 0, left = 0, pad = 0;
  bool flip = false;
  if (aug && aug->random_crop) {
    pad = aug->crop_padding;
    top = (int)dt_rng_below(r, (uint64_t)(2 * pad + 1));
    left = (int)dt_rng_below(r, (uint64_t)(2 * pad + 1));
  }
  if (aug && aug->hflip) flip = dt_rng_uniform(r) < (double)aug->hflip_prob;
  const int dy = top - pad, dx = left - pad; // out(y, x) = padded(y + top, x + left)
  for (int c = 0; c < C; c++) {
    const float mean = ds->mean[c], std = ds->std[c];
    const float zero = (0.0f / 255.0f - mean) / std; /* a padding pixel, normalised */
    const uint8_t *plane = src + (size_t)c * H * W;
    float *o = out + (size_t)c * H * W;
    for (int y = 0; y < H; y++) {
      const int sy = y + dy;
      for (int x = 0; x < W; x++) {
        const int sx = (flip ? W - 1 - x : x) + dx;
        float v = zero;
        if (sy >= 0 && sy < H && sx >= 0 && sx < W)
          v = ((float)plane[sy * W + sx] / 255.0f - mean) / std;
        o[y * W + x] = v;
      }
    }
  }
}

/* Set [y0, y1) x [x0, x1) of every channel of img (C, H, W) to v. */
static void dt_augment_fill(float *img, int C, int H, int W, int y0, int y1, int x0, int x1, float v) {
  for (int c = 0; c < C; c++)
    for (int y = y0; y < y1; y++)
      for (int x = x0; x < x1; x++) img[((size_t)c * H + y) * W + x] = v;
}

/* Cutout as the reference code draws it: one mask_size square, centre drawn over the whole image
 * (or inside it), clipped at the border, set to mask colour 0 in normalised space. */
static void dt_augment_cutout(const dt_erase_cfg *e, dt_rng *r, int C, int H, int W, float *img) {
  if (dt_rng_uniform(r) > e->cutout_prob) return;
  const int m = e->cutout_size, half = m / 2, off = m % 2 == 0 ? 1 : 0;
  int cxmin = 0, cxmax = W + off, cymin = 0, cymax = H + off;
  if (e->cutout_inside) {
    cxmin = half, cxmax = W + off - half;
    cymin = half, cymax = H + off - half;
  }
  /* An empty range (cutout_inside with m > the image) is refused by the config check. */
  DT_CHECK(cxmax > cxmin && cymax > cymin);
  const int cx = dt_augment_randint(r, cxmin, cxmax);
  const int cy = dt_augment_randint(r, cymin, cymax);
  const int x0 = DT_MAX(cx - half, 0), x1 = DT_MIN(cx - half + m, W);
  const int y0 = DT_MAX(cy - half, 0), y1 = DT_MIN(cy - half + m, H);
  dt_augment_fill(img, C, H, W, y0, y1, x0, x1, 0.0f);
}

/* Random Erasing as the reference code draws it: up to max_attempts rectangles are drawn until one
 * fits strictly inside the image; it is filled with one scalar U(0, 1) in normalised space. */
static void dt_augment_erase(const dt_erase_cfg *e, dt_rng *r, int C, int H, int W, float *img) {
  if (dt_rng_uniform(r) > e->erasing_prob) return;
  const double image_area = (double)H * W;
  const double rl = e->erasing_min_aspect, rh = 1.0 / e->erasing_min_aspect;
  for (int attempt = 0; attempt < e->erasing_max_attempts; attempt++) {
    const double area =
        (e->erasing_area_min + (e->erasing_area_max - e->erasing_area_min) * dt_rng_uniform(r)) *
        image_area;
    const double aspect = rl + (rh - rl) * dt_rng_uniform(r);
    const int h = (int)sqrt(area * aspect), w = (int)sqrt(area / aspect);
    if (w < W && h < H) {
      const int x0 = dt_augment_randint(r, 0, W - w);
      const int y0 = dt_augment_randint(r, 0, H - h);
      const float v = (float)dt_rng_uniform(r);
      dt_augment_fill(img, C, H, W, y0, y0 + h, x0, x0 + w, v);
      return;
    }
  }
}

void dt_augment_views(const dt_dataset *ds, const dt_split *split, int index,
                      const dt_augment_cfg *aug, const dt_erase_cfg *erase, uint64_t seed,
                      long epoch, float *out, float *out2) {
  const int C = split->channels, H = split->height, W = split->width;
  dt_rng r = dt_rng_key(seed, DT_RNG_AUGMENT, (uint64_t)epoch, (uint64_t)index);
  dt_augment_geometry(ds, split, index, aug, &r, out);
  if (!erase) return;
  if (erase->cutout) dt_augment_cutout(erase, &r, C, H, W, out);
  if (erase->random_erasing) dt_augment_erase(erase, &r, C, H, W, out);
  if (erase->dual_cutout) {
    /* Dual-Cutout as the reference code builds it: hstack(cutout(image), cutout(image)), two
     * independent draws. */
    if (out2) memcpy(out2, out, sizeof(float) * (size_t)C * H * W);
    dt_augment_cutout(erase, &r, C, H, W, out);
    if (out2) dt_augment_cutout(erase, &r, C, H, W, out2);
  }
}

void dt_augment_image(const dt_dataset *ds, const dt_split *split, int index,
                      const dt_augment_cfg *aug, uint64_t seed, long epoch, float *out) {
  dt_augment_views(ds, split, index, aug, NULL, seed, epoch, out, NULL);
}
