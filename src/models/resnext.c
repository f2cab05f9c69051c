/* resnext.c: ResNeXt for CIFAR-type inputs (docs/reference-experiments.md "ResNeXt").
 *   conv3x3(C_in -> c0) -> BN -> ReLU -> stage1 (stride 1) -> stage2 (2) -> stage3 (2) -> GAP -> FC
 * with depth 9n+2 and stage outputs 4 c0, 8 c0, 16 c0 (c0 = initial_channels, 64 in the reference
 * config).
 * Block: conv1x1(-> D) BN ReLU grouped conv3x3(D -> D, groups = cardinality, stride s) BN ReLU
 * conv1x1(-> out) BN, + shortcut, ReLU; D = cardinality * base_channels * 2^stage (0-based).
 * Shortcut: identity, or conv1x1(stride s) -> BN when the channel count changes.
 * "ResNeXt-29 CxDd" is cardinality C, base_channels D. */
#include <stdio.h>

#include "models/blocks.h"
#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_resnext(const dt_config *cfg, const char *src, int height, int width) {
  (void)height, (void)width;
  return dt_model_check_depth(cfg, src, 9, 2, false, "11, 20, 29, ...");
}

/* ---- the network ---- */

static int block(dt_graph *g, const char *name, int x, int out_ch, int stride, int width,
                 int cardinality) {
  char nm[128];
  snprintf(nm, sizeof nm, "%s.conv1", name);
  int y = dt_graph_conv(g, nm, x, width, 1, 1, 0, 1, -1);
  snprintf(nm, sizeof nm, "%s.bn1", name);
  y = dt_graph_bn(g, nm, y, true);
  snprintf(nm, sizeof nm, "%s.conv2", name);
  y = dt_graph_conv(g, nm, y, width, 3, stride, 1, cardinality, -1);
  snprintf(nm, sizeof nm, "%s.bn2", name);
  y = dt_graph_bn(g, nm, y, true);
  snprintf(nm, sizeof nm, "%s.conv3", name);
  y = dt_graph_conv(g, nm, y, out_ch, 1, 1, 0, 1, -1);
  snprintf(nm, sizeof nm, "%s.bn3", name);
  y = dt_graph_bn(g, nm, y, false);
  int shortcut = x;
  if (dt_graph_shape(g, x).c != out_ch)
    shortcut = dt_block_projection(g, name, x, out_ch, stride, true);
  return dt_graph_relu(g, dt_graph_add(g, y, shortcut));
}

void dt_build_resnext(const dt_config *cfg, dt_graph *g, int classes) {
  int n_blocks = (int)(cfg->model_depth - 2) / 9;
  int c0 = (int)cfg->model_initial_channels, cardinality = (int)cfg->model_cardinality;
  int base = (int)cfg->model_base_channels;
  int x = dt_graph_conv(g, "conv", 0, c0, 3, 1, 1, 1, -1);
  x = dt_graph_bn(g, "bn", x, true);
  for (int st = 0; st < 3; st++) {
    int out_ch = 4 * c0 << st, width = cardinality * base << st;
    for (int b = 0; b < n_blocks; b++) {
      char name[64];
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      x = block(g, name, x, out_ch, b == 0 && st > 0 ? 2 : 1, width, cardinality);
    }
  }
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
