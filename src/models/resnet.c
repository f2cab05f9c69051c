/* resnet.c: post-activation ResNet for CIFAR-type inputs (docs/reference-experiments.md "ResNet").
 *   conv3x3(C_in -> c0) -> BN -> ReLU -> stage1 (stride 1) -> stage2 (2) -> stage3 (2) -> GAP -> FC
 * Basic blocks (depth 6n+2): conv3x3(s) BN ReLU conv3x3 BN, + shortcut, ReLU.
 * Bottleneck (9n+2): conv1x1 BN ReLU conv3x3(s) BN ReLU conv1x1 BN, + shortcut, ReLU; the width is
 * out/4 and stage 1 keeps c0 channels (a quirk of the reference code, docs/reference-experiments.md
 * "ResNet").
 * Shortcut: identity, or a projection conv1x1(stride s) -> BN (`shortcut.conv`, `shortcut.bn`)
 * when the channel count changes. The BN between the last conv and the addition keeps the
 * addition a node of its own. */
#include <stdio.h>
#include <string.h>

#include "models/blocks.h"
#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_resnet(const dt_config *cfg, const char *src, int height, int width) {
  (void)height, (void)width;
  return dt_model_check_residual_depth(cfg, src);
}

/* ---- the network ---- */

static int block(dt_graph *g, const char *name, int x, int out_ch, int stride, bool bottleneck) {
  char nm[128];
  int n_convs = bottleneck ? 3 : 2;
  int width = bottleneck ? out_ch / 4 : out_ch;
  int y = x;
  for (int i = 1; i <= n_convs; i++) {
    bool last = i == n_convs;
    int ksize = bottleneck && i != 2 ? 1 : 3;
    /* the stride sits on the first conv of a basic block, on the 3x3 of a bottleneck */
    int conv_stride = (bottleneck ? i == 2 : i == 1) ? stride : 1;
    snprintf(nm, sizeof nm, "%s.conv%d", name, i);
    y = dt_graph_conv(g, nm, y, last ? out_ch : width, ksize, conv_stride, ksize / 2, 1, -1);
    snprintf(nm, sizeof nm, "%s.bn%d", name, i);
    y = dt_graph_bn(g, nm, y, !last);
  }
  /* the shortcut after the branch: parameters in PyTorch's state_dict order */
  int shortcut = x;
  if (dt_graph_shape(g, x).c != out_ch)
    shortcut = dt_block_projection(g, name, x, out_ch, stride, true);
  return dt_graph_relu(g, dt_graph_add(g, y, shortcut));
}

void dt_build_resnet(const dt_config *cfg, dt_graph *g, int classes) {
  bool bottleneck = cfg->model_block_type == DT_MODEL_BLOCK_TYPE_BOTTLENECK;
  int depth = (int)cfg->model_depth;
  int n_blocks = bottleneck ? (depth - 2) / 9 : (depth - 2) / 6;
  int c0 = (int)cfg->model_initial_channels, e = bottleneck ? 4 : 1;
  int channels[3] = {c0, 2 * c0 * e, 4 * c0 * e};
  int x = dt_graph_conv(g, "conv", 0, c0, 3, 1, 1, 1, -1);
  x = dt_graph_bn(g, "bn", x, true);
  for (int st = 0; st < 3; st++) {
    for (int b = 0; b < n_blocks; b++) {
      char name[64];
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      x = block(g, name, x, channels[st], b == 0 && st > 0 ? 2 : 1, bottleneck);
    }
  }
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
