/* wrn.c: wide residual network for CIFAR-type inputs (docs/reference-experiments.md "WRN").
 *   conv3x3(C_in -> c0) -> stage1 (stride 1) -> stage2 (2) -> stage3 (2) -> BN -> ReLU -> GAP -> FC
 * with depth 6n+4, stage channels c0 k, 2 c0 k, 4 c0 k (c0 = initial_channels = 16, k =
 * widening_factor). Block: BN1 ReLU conv3x3(s) [dropout] BN2 ReLU conv3x3, + shortcut, no ReLU
 * after the addition. When the channel count changes (the first block of every stage, stage 1
 * included) the pre-activated input feeds both the branch and the 1x1 projection shortcut
 * (`shortcut.conv`, stride s, no BN); otherwise the shortcut is the raw input. The reference code's
 * dropout sits on the conv1 output before BN2 (the paper puts it after the ReLU). The addition is
 * fused into conv2. */
#include <stdio.h>

#include "models/blocks.h"
#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_wrn(const dt_config *cfg, const char *src, int height, int width) {
  (void)height, (void)width;
  return dt_model_check_depth(cfg, src, 6, 4, false, "10, 16, 22, 28, 40, ...");
}

/* ---- the network ---- */

static int block(dt_graph *g, const char *name, int x, int out_ch, int stride, float drop) {
  char nm[128];
  bool project = dt_graph_shape(g, x).c != out_ch;
  snprintf(nm, sizeof nm, "%s.bn1", name);
  int a = dt_graph_bn(g, nm, x, true);
  snprintf(nm, sizeof nm, "%s.conv1", name);
  int y = dt_graph_conv(g, nm, a, out_ch, 3, stride, 1, 1, -1);
  if (drop > 0) y = dt_graph_dropout(g, y, drop);
  snprintf(nm, sizeof nm, "%s.bn2", name);
  y = dt_graph_bn(g, nm, y, true);
  int shortcut = x;
  if (project) shortcut = dt_block_projection(g, name, a, out_ch, stride, false);
  snprintf(nm, sizeof nm, "%s.conv2", name);
  return dt_graph_conv(g, nm, y, out_ch, 3, 1, 1, 1, shortcut);
}

void dt_build_wrn(const dt_config *cfg, dt_graph *g, int classes) {
  int n_blocks = (int)(cfg->model_depth - 4) / 6;
  int c0 = (int)cfg->model_initial_channels, k = (int)cfg->model_widening_factor;
  int channels[3] = {c0 * k, 2 * c0 * k, 4 * c0 * k};
  float drop = (float)cfg->model_drop_rate;
  int x = dt_graph_conv(g, "conv", 0, c0, 3, 1, 1, 1, -1);
  for (int st = 0; st < 3; st++) {
    for (int b = 0; b < n_blocks; b++) {
      char name[64];
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      x = block(g, name, x, channels[st], b == 0 && st > 0 ? 2 : 1, drop);
    }
  }
  x = dt_graph_bn(g, "bn", x, true);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
