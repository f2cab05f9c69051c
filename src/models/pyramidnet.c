/* pyramidnet.c: PyramidNet for CIFAR-type inputs (docs/reference-experiments.md "PyramidNet").
 *   conv3x3(C_in -> c0) -> BN -> stage1 (stride 1) -> stage2 (2) -> stage3 (2) -> BN -> ReLU
 *   -> GAP -> FC
 * with depth 6n+2 (basic) or 9n+2 (bottleneck). The width grows by alpha/(3n) per block,
 * accumulated unrounded from c0 = initial_channels in double precision; block j outputs round(c_j)
 * e channels, rounding half to even as numpy does (e = 1 basic, 4 bottleneck; the stem stays c0 in
 * the current reference code, docs/reference-experiments.md "Code generations"). Basic block: BN1
 * conv3x3(s) BN2 ReLU conv3x3 BN3. Bottleneck: BN1 conv1x1 BN2 ReLU conv3x3(s) BN3 ReLU conv1x1
 * BN4. No first ReLU, a last BN, no ReLU after the addition. Shortcut: the input, average-pooled
 * 2x2/2 when the block strides, with zero channels appended up to the block's width. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_pyramidnet(const dt_config *cfg, const char *src, int height, int width) {
  dt_status st = dt_model_check_residual_depth(cfg, src);
  if (st != DT_OK) return st;
  /* The shortcut average-pools 2x2 where the residual path convolves with stride 2, which
   * agree only on even sides, at stages 2 and 3 (a user's own images can have any size). */
  return dt_model_check_image(cfg, src, height, width, height % 4 == 0 && width % 4 == 0,
                              "whose height and width are multiples of 4 (its stride-2 stages "
                              "need even sides)");
}

/* ---- the network ---- */

static int block(dt_graph *g, const char *name, int x, int out_ch, int stride, bool bottleneck) {
  char nm[128];
  int n_convs = bottleneck ? 3 : 2, width = bottleneck ? out_ch / 4 : out_ch;
  snprintf(nm, sizeof nm, "%s.bn1", name);
  int y = dt_graph_bn(g, nm, x, false);
  for (int i = 1; i <= n_convs; i++) {
    bool last = i == n_convs;
    int ksize = bottleneck && i != 2 ? 1 : 3;
    int conv_stride = (bottleneck ? i == 2 : i == 1) ? stride : 1;
    snprintf(nm, sizeof nm, "%s.conv%d", name, i);
    y = dt_graph_conv(g, nm, y, last ? out_ch : width, ksize, conv_stride, ksize / 2, 1, -1);
    snprintf(nm, sizeof nm, "%s.bn%d", name, i + 1);
    y = dt_graph_bn(g, nm, y, !last);
  }
  int shortcut = x;
  if (stride > 1) shortcut = dt_graph_pool(g, shortcut, DT_POOL_AVG, 2, 2, 0);
  if (dt_graph_shape(g, shortcut).c < out_ch) shortcut = dt_graph_pad_channels(g, shortcut, out_ch);
  return dt_graph_add(g, y, shortcut);
}

void dt_build_pyramidnet(const dt_config *cfg, dt_graph *g, int classes) {
  bool bottleneck = cfg->model_block_type == DT_MODEL_BLOCK_TYPE_BOTTLENECK;
  int depth = (int)cfg->model_depth, e = bottleneck ? 4 : 1;
  int n_blocks = bottleneck ? (depth - 2) / 9 : (depth - 2) / 6;
  int c0 = (int)cfg->model_initial_channels;
  double width = c0, step = cfg->model_alpha / (3 * n_blocks);
  int x = dt_graph_conv(g, "conv", 0, c0, 3, 1, 1, 1, -1);
  x = dt_graph_bn(g, "bn1", x, false);
  for (int st = 0; st < 3; st++) {
    for (int b = 0; b < n_blocks; b++) {
      char name[64];
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      width += step;
      /* nearbyint rounds half to even in the default rounding mode, like numpy.round */
      int out_ch = (int)nearbyint(width) * e;
      x = block(g, name, x, out_ch, b == 0 && st > 0 ? 2 : 1, bottleneck);
    }
  }
  x = dt_graph_bn(g, "bn2", x, true);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
