/* mix.c: batch-level mixing of docs/reference-experiments.md "Augmentations and losses" (mixup,
 * RICAP, CutMix) and the soft targets of every method, plus the Gamma and Beta samplers they draw
 * from. The draws of a global batch depend only on (seed, epoch, global batch index), and the
 * images and targets of position g only on those draws and on the augmented images they name, so
 * any rank can build any slice of the global batch and get the same bits as a single process. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/loader.h"

double dt_mix_log_gamma(dt_rng *r, double shape) {
  DT_CHECK(shape > 0);
  /* Gamma(a) = Gamma(a + 1) U^(1/a) for a < 1 (Marsaglia and Tsang 2000, section 6); the
   * power is taken in log space because U^(1/a) underflows for small a. 1 - uniform is in
   * (0, 1], so its logarithm is finite. */
  double boost = 0;
  if (shape < 1) {
    boost = log(1.0 - dt_rng_uniform(r)) / shape;
    shape += 1;
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = dt_rng_normal(r);
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = 1.0 - dt_rng_uniform(r);
    /* squeeze first, then the exact acceptance test */
    if (u < 1.0 - 0.0331 * (x * x) * (x * x) || log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
      return log(d * v) + boost;
  }
}

double dt_mix_beta(dt_rng *r, double a, double b) {
  const double lx = dt_mix_log_gamma(r, a), ly = dt_mix_log_gamma(r, b);
  /* X / (X + Y) = 1 / (1 + exp(ln Y - ln X)), exact at either extreme */
  return 1.0 / (1.0 + exp(ly - lx));
}

void dt_mix_permutation(dt_rng *r, int n, int *perm) {
  for (int i = 0; i < n; i++) perm[i] = i;
  for (int i = n - 1; i > 0; i--) {
    int j = (int)dt_rng_below(r, (uint64_t)i + 1);
    int t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

void dt_mix_params_init(dt_mix_params *p, int B) {
  memset(p, 0, sizeof *p);
  p->B = B;
  for (int k = 0; k < 4; k++) p->perm[k] = dt_xmalloc(sizeof(int) * (size_t)DT_MAX(B, 1));
}

void dt_mix_params_free(dt_mix_params *p) {
  for (int k = 0; k < 4; k++) free(p->perm[k]);
  memset(p, 0, sizeof *p);
}

void dt_mix_draw(const dt_mix_cfg *cfg, uint64_t seed, long epoch, long step, int H, int W,
                 dt_mix_params *p) {
  p->kind = cfg->kind;
  if (cfg->kind == DT_MIX_NONE) return;
  dt_rng r = dt_rng_key(seed, DT_RNG_BATCH, (uint64_t)epoch, (uint64_t)step);
  const double a = cfg->alpha;
  switch (cfg->kind) {
    case DT_MIX_NONE: break;
    case DT_MIX_MIXUP: /* as the reference mixup: permutation first, then the Beta draw */
      dt_mix_permutation(&r, p->B, p->perm[0]);
      p->lambda = dt_mix_beta(&r, a, a);
      break;
    case DT_MIX_CUTMIX: { /* as the reference CutMix */
      dt_mix_permutation(&r, p->B, p->perm[0]);
      p->lambda = dt_mix_beta(&r, a, a);
      p->cx = W * dt_rng_uniform(&r);
      p->cy = H * dt_rng_uniform(&r);
      const double w = W * sqrt(1.0 - p->lambda), h = H * sqrt(1.0 - p->lambda);
      p->box_x0 = (int)rint(fmax(p->cx - w / 2, 0.0));
      p->box_x1 = (int)rint(fmin(p->cx + w / 2, (double)W));
      p->box_y0 = (int)rint(fmax(p->cy - h / 2, 0.0));
      p->box_y1 = (int)rint(fmin(p->cy + h / 2, (double)H));
      break;
    }
    case DT_MIX_RICAP: { /* as the reference RICAP */
      p->ratio_w = dt_mix_beta(&r, a, a);
      p->ratio_h = dt_mix_beta(&r, a, a);
      const int w0 = (int)rint(W * p->ratio_w), h0 = (int)rint(H * p->ratio_h);
      const int ws[4] = {w0, W - w0, w0, W - w0}, hs[4] = {h0, h0, H - h0, H - h0};
      const int pxs[4] = {0, w0, 0, w0}, pys[4] = {0, 0, h0, h0};
      for (int k = 0; k < 4; k++) {
        p->w[k] = ws[k], p->h[k] = hs[k], p->px[k] = pxs[k], p->py[k] = pys[k];
        dt_mix_permutation(&r, p->B, p->perm[k]);
        p->x0[k] = (int)dt_rng_below(&r, (uint64_t)(W - ws[k] + 1));
        p->y0[k] = (int)dt_rng_below(&r, (uint64_t)(H - hs[k] + 1));
        p->weight[k] = (double)ws[k] * hs[k] / ((double)W * H);
      }
      break;
    }
  }
}

void dt_mix_image(const dt_mix_params *p, int C, int H, int W, const float *const src[4],
                  float *out) {
  const size_t plane = (size_t)H * W;
  switch (p->kind) {
    case DT_MIX_NONE: memcpy(out, src[0], sizeof(float) * C * plane); break;
    case DT_MIX_MIXUP: {
      const float l = (float)p->lambda, m = (float)(1.0 - p->lambda);
      for (size_t i = 0; i < C * plane; i++) out[i] = l * src[0][i] + m * src[1][i];
      break;
    }
    case DT_MIX_CUTMIX:
      memcpy(out, src[0], sizeof(float) * C * plane);
      for (int c = 0; c < C; c++)
        for (int y = p->box_y0; y < p->box_y1; y++)
          for (int x = p->box_x0; x < p->box_x1; x++)
            out[c * plane + (size_t)y * W + x] = src[1][c * plane + (size_t)y * W + x];
      break;
    case DT_MIX_RICAP:
      for (int k = 0; k < 4; k++)
        for (int c = 0; c < C; c++)
          for (int y = 0; y < p->h[k]; y++)
            memcpy(out + c * plane + (size_t)(p->py[k] + y) * W + p->px[k],
                   src[k] + c * plane + (size_t)(p->y0[k] + y) * W + p->x0[k],
                   sizeof(float) * (size_t)p->w[k]);
      break;
  }
}

void dt_mix_target(const dt_mix_cfg *cfg, const dt_mix_params *p, int g, const int *labels,
                   int K, float *row) {
  memset(row, 0, sizeof(float) * (size_t)K);
  switch (p->kind) {
    case DT_MIX_NONE: {
      /* (1 - eps) onehot + eps / K; eps = 0 gives exactly onehot */
      const double eps = cfg->label_smoothing;
      const float off = (float)(eps / K);
      for (int c = 0; c < K; c++) row[c] = off;
      row[labels[g]] = (float)(1.0 - eps + eps / K);
      break;
    }
    case DT_MIX_MIXUP:
    case DT_MIX_CUTMIX:
      /* accumulated in double: y and y[perm] may be the same class */
      {
        double acc[2] = {p->lambda, 1.0 - p->lambda};
        int cls[2] = {labels[g], labels[p->perm[0][g]]};
        if (cls[0] == cls[1]) acc[0] = 1.0, acc[1] = 0;
        for (int k = 0; k < 2; k++) row[cls[k]] += (float)acc[k];
      }
      break;
    case DT_MIX_RICAP: {
      double acc[4];
      int cls[4];
      for (int k = 0; k < 4; k++) cls[k] = labels[p->perm[k][g]], acc[k] = p->weight[k];
      for (int k = 0; k < 4; k++)
        for (int j = 0; j < k; j++)
          if (cls[j] == cls[k]) acc[j] += acc[k], acc[k] = 0;
      for (int k = 0; k < 4; k++)
        if (acc[k] > 0) row[cls[k]] = (float)acc[k];
      break;
    }
  }
}
