/* shake_shake.c: shake-shake regularised ResNet for CIFAR-type inputs
 * (docs/reference-experiments.md "Shake-shake", the current reference topology).
 *   conv3x3(C_in -> 16) -> BN -> stage1 (16 -> C, stride 1) -> stage2 (C -> 2C, 2)
 *   -> stage3 (2C -> 4C, 2) -> ReLU -> GAP -> FC
 * with depth 6n+2 and C = initial_channels ("2xCd"). A block has two residual paths of the
 * same structure, ReLU conv3x3(s) BN ReLU conv3x3 BN (`residual_path1`, `residual_path2`),
 * mixed by shake-shake (random alpha forward, beta backward, per image with shake_image; 0.5
 * in inference), plus the shortcut: identity, or, when the channel count changes (stage 1's
 * first block included), ReLU then two 1x1 convs to out/2 channels, the second on the input
 * shifted by one pixel up and left (zero filled), both subsampled by the stride, concatenated
 * and batch-normalised (`shortcut.skip.conv1`, `conv2`, `bn`). A strided 1x1 convolution is
 * the subsampling followed by the convolution, so no pooling node is needed. The ReLU of the
 * block input is computed once and shared by both paths and the projection. */
#include <stdio.h>

#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_shake_shake(const dt_config *cfg, const char *src, int height, int width) {
  (void)height, (void)width;
  dt_status st = dt_model_check_depth(cfg, src, 6, 2, false, "8, 14, 20, 26, ...");
  if (st != DT_OK) return st;
  if (cfg->model_initial_channels % 2 != 0)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [model] initial_channels = %ld: shake_shake needs an even width (the "
                        "projection shortcut concatenates two halves)",
                        src, cfg->model_initial_channels);
  return DT_OK;
}

/* ---- the network ---- */

typedef struct {
  bool forward, backward, image;
} shake_flags;

/* r = ReLU(x) // (N, C_in, H, W) -> (N, out, H/s, W/s) */
static int residual_path(dt_graph *g, const char *name, int r, int out_ch, int stride) {
  char nm[128];
  snprintf(nm, sizeof nm, "%s.conv1", name);
  int y = dt_graph_conv(g, nm, r, out_ch, 3, stride, 1, 1, -1);
  snprintf(nm, sizeof nm, "%s.bn1", name);
  y = dt_graph_bn(g, nm, y, true);
  snprintf(nm, sizeof nm, "%s.conv2", name);
  y = dt_graph_conv(g, nm, y, out_ch, 3, 1, 1, 1, -1);
  snprintf(nm, sizeof nm, "%s.bn2", name);
  return dt_graph_bn(g, nm, y, false);
}

/* x: the block input (-1 when only its ReLU is needed), r: ReLU(x) or -1 to compute it here. */
static int block(dt_graph *g, const char *name, int x, int r, int out_ch, int stride,
                 const shake_flags *f) {
  char nm[128];
  if (r < 0) r = dt_graph_relu(g, x);
  snprintf(nm, sizeof nm, "%s.residual_path1", name);
  int b1 = residual_path(g, nm, r, out_ch, stride);
  snprintf(nm, sizeof nm, "%s.residual_path2", name);
  int b2 = residual_path(g, nm, r, out_ch, stride);
  int y = dt_graph_shake(g, b1, b2, f->forward, f->backward, f->image);
  int shortcut = x;
  if (dt_graph_shape(g, r).c != out_ch) {
    snprintf(nm, sizeof nm, "%s.shortcut.skip.conv1", name);
    int p1 = dt_graph_conv(g, nm, r, out_ch / 2, 1, stride, 0, 1, -1);
    snprintf(nm, sizeof nm, "%s.shortcut.skip.conv2", name);
    int p2 = dt_graph_conv(g, nm, dt_graph_shift(g, r, 1, 1), out_ch / 2, 1, stride, 0, 1, -1);
    snprintf(nm, sizeof nm, "%s.shortcut.skip.bn", name);
    shortcut = dt_graph_bn(g, nm, dt_graph_concat(g, p1, p2), false);
  }
  return dt_graph_add(g, shortcut, y);
}

void dt_build_shake_shake(const dt_config *cfg, dt_graph *g, int classes) {
  enum { STEM = 16 };
  int n_blocks = (int)(cfg->model_depth - 2) / 6, c = (int)cfg->model_initial_channels;
  int channels[3] = {c, 2 * c, 4 * c};
  shake_flags f = {cfg->model_shake_forward, cfg->model_shake_backward, cfg->model_shake_image};
  int x = dt_graph_conv(g, "conv", 0, STEM, 3, 1, 1, 1, -1);
  /* With a projection in stage 1's first block (C != 16) only ReLU(stem) is ever used: fuse it. */
  bool fuse = c != STEM;
  x = dt_graph_bn(g, "bn", x, fuse);
  for (int st = 0; st < 3; st++) {
    for (int b = 0; b < n_blocks; b++) {
      char name[64];
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      bool first = st == 0 && b == 0;
      x = block(g, name, first && fuse ? -1 : x, first && fuse ? x : -1, channels[st],
                b == 0 && st > 0 ? 2 : 1, &f);
    }
  }
  x = dt_graph_relu(g, x);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
