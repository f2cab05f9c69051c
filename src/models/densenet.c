/* densenet.c: DenseNet and DenseNet-BC for CIFAR-type inputs (docs/reference-experiments.md
 * "DenseNet").
 *   conv3x3(C_in -> 2k) -> stage1 -> transition -> stage2 -> transition -> stage3
 *   -> BN -> ReLU -> GAP -> FC
 * The stem has 2k channels for both variants (the paper's plain DenseNet uses 16). A stage has
 * n layers (depth 3n+4 basic, 6n+4 bottleneck), each concatenating k new channels after its
 * input: basic BN ReLU conv3x3(-> k) [dropout]; bottleneck BN1 ReLU conv1x1(-> 4k) [dropout]
 * BN2 ReLU conv3x3(-> k) [dropout]. A transition (`stageS.transition`) is BN ReLU
 * conv1x1(C -> floor(theta C)) [dropout] avg-pool 2x2/2, theta = compression_rate. */
#include <stdio.h>
#include <string.h>

#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_densenet(const dt_config *cfg, const char *src, int height, int width) {
  /* 4 layers outside the blocks (stem, 2 transitions, FC); 1 or 2 convs per dense layer */
  long per = 0;
  dt_status st = DT_OK;
  switch (cfg->model_block_type) {
    case DT_MODEL_BLOCK_TYPE_BASIC:
      per = 3;
      st = dt_model_check_depth(cfg, src, 3, 4, true, "40, 100, ...");
      break;
    case DT_MODEL_BLOCK_TYPE_BOTTLENECK:
      per = 6;
      st = dt_model_check_depth(cfg, src, 6, 4, true, "22, 40, 100, 190, 250, ...");
      break;
  }
  if (st != DT_OK) return st;
  /* Walk the channels: a transition must keep at least one. */
  long k = cfg->model_growth_rate, n = (cfg->model_depth - 4) / per, c = 2 * k;
  for (int t = 1; t <= 2; t++) {
    c += n * k;
    long kept = (long)((double)c * cfg->model_compression_rate);
    if (kept < 1)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [model] compression_rate = %g: transition %d would keep "
                          "floor(%ld x %g) = 0 channels",
                          src, cfg->model_compression_rate, t, c, cfg->model_compression_rate);
    c = kept;
  }
  /* The two transitions each average-pool 2x2 (a user's own images can have any size). */
  return dt_model_check_image(cfg, src, height, width, height >= 4 && width >= 4,
                              "of at least 4x4 (two 2x2 average-pooling transitions)");
}

/* ---- the network ---- */

/* One dense layer: returns concat(x, new features) // (N, C + k, H, W) */
static int dense_layer(dt_graph *g, const char *name, int x, int k, bool bottleneck, float drop) {
  char nm[128];
  int y = x;
  if (bottleneck) {
    snprintf(nm, sizeof nm, "%s.bn1", name);
    y = dt_graph_bn(g, nm, y, true);
    snprintf(nm, sizeof nm, "%s.conv1", name);
    y = dt_graph_conv(g, nm, y, 4 * k, 1, 1, 0, 1, -1);
    if (drop > 0) y = dt_graph_dropout(g, y, drop);
  }
  snprintf(nm, sizeof nm, bottleneck ? "%s.bn2" : "%s.bn", name);
  y = dt_graph_bn(g, nm, y, true);
  snprintf(nm, sizeof nm, bottleneck ? "%s.conv2" : "%s.conv", name);
  y = dt_graph_conv(g, nm, y, k, 3, 1, 1, 1, -1);
  if (drop > 0) y = dt_graph_dropout(g, y, drop);
  return dt_graph_concat(g, x, y);
}

static int transition(dt_graph *g, const char *name, int x, double theta, float drop) {
  char nm[128];
  int out_ch = (int)(dt_graph_shape(g, x).c * theta);
  snprintf(nm, sizeof nm, "%s.bn", name);
  int y = dt_graph_bn(g, nm, x, true);
  snprintf(nm, sizeof nm, "%s.conv", name);
  y = dt_graph_conv(g, nm, y, out_ch, 1, 1, 0, 1, -1);
  if (drop > 0) y = dt_graph_dropout(g, y, drop);
  return dt_graph_pool(g, y, DT_POOL_AVG, 2, 2, 0);
}

void dt_build_densenet(const dt_config *cfg, dt_graph *g, int classes) {
  bool bottleneck = cfg->model_block_type == DT_MODEL_BLOCK_TYPE_BOTTLENECK;
  int depth = (int)cfg->model_depth, k = (int)cfg->model_growth_rate;
  int n_layers = bottleneck ? (depth - 4) / 6 : (depth - 4) / 3;
  float drop = (float)cfg->model_drop_rate;
  int x = dt_graph_conv(g, "conv", 0, 2 * k, 3, 1, 1, 1, -1);
  for (int st = 0; st < 3; st++) {
    char name[64];
    for (int b = 0; b < n_layers; b++) {
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      x = dense_layer(g, name, x, k, bottleneck, drop);
    }
    if (st < 2) {
      snprintf(name, sizeof name, "stage%d.transition", st + 1);
      x = transition(g, name, x, cfg->model_compression_rate, drop);
    }
  }
  x = dt_graph_bn(g, "bn", x, true);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
