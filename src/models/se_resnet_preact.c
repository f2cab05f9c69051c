/* se_resnet_preact.c: pre-activation ResNet with squeeze-and-excitation
 * (docs/reference-experiments.md "SE-ResNet-preact"). The network and blocks are those of
 * resnet_preact.c (docs/reference-experiments.md "ResNet-preact": remove_first_relu, add_last_bn,
 * preact_stage), plus an SE layer on the branch output after the last conv and the optional last
 * BN, before the addition:
 *   GAP -> FC(C -> floor(C/r), bias) -> ReLU -> FC(-> C, bias) -> sigmoid -> scale the channels
 * (`se.fc1`, `se.fc2`, r = se_reduction). The SE scaling sits between the last conv and the
 * addition, so the addition is a node of its own. Initialisation is always Kaiming fan_out
 * (model.c). */
#include <stdio.h>
#include <string.h>

#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_se_resnet_preact(const dt_config *cfg, const char *src, int height,
                                       int width) {
  (void)height, (void)width;
  dt_status st = dt_model_check_residual_depth(cfg, src);
  if (st != DT_OK) return st;
  if (cfg->model_se_reduction > cfg->model_initial_channels)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [model] se_reduction = %ld is greater than initial_channels = %ld: "
                        "the SE layers of stage 1 would have floor(%ld/%ld) = 0 units",
                        src, cfg->model_se_reduction, cfg->model_initial_channels,
                        cfg->model_initial_channels, cfg->model_se_reduction);
  return DT_OK;
}

/* ---- the network ---- */

typedef struct {
  bool bottleneck, remove_first_relu, add_last_bn;
  int reduction;
} block_opts;

/* y * sigmoid(fc2(relu(fc1(gap(y))))) // (N, C, H, W) */
static int se_layer(dt_graph *g, const char *name, int y, int reduction) {
  char nm[144];
  int c = dt_graph_shape(g, y).c;
  int s = dt_graph_gap(g, y); /* (N, C, 1, 1) */
  snprintf(nm, sizeof nm, "%s.fc1", name);
  s = dt_graph_relu(g, dt_graph_linear(g, nm, s, c / reduction));
  snprintf(nm, sizeof nm, "%s.fc2", name);
  s = dt_graph_sigmoid(g, dt_graph_linear(g, nm, s, c));
  return dt_graph_scale(g, y, s);
}

static int block(dt_graph *g, const char *name, int x, int out_ch, int stride, bool preact,
                 const block_opts *o) {
  char nm[128];
  int shortcut_in = x, branch;
  snprintf(nm, sizeof nm, "%s.bn1", name);
  if (preact) {
    branch = dt_graph_bn(g, nm, x, true); /* the ReLU stays even with remove_first_relu */
    shortcut_in = branch;
  } else {
    branch = dt_graph_bn(g, nm, x, !o->remove_first_relu);
  }
  int n_convs = o->bottleneck ? 3 : 2, width = o->bottleneck ? out_ch / 4 : out_ch;
  for (int i = 1; i <= n_convs; i++) {
    bool last = i == n_convs;
    int ksize = o->bottleneck && i != 2 ? 1 : 3;
    int conv_stride = (o->bottleneck ? i == 2 : i == 1) ? stride : 1;
    snprintf(nm, sizeof nm, "%s.conv%d", name, i);
    branch = dt_graph_conv(g, nm, branch, last ? out_ch : width, ksize, conv_stride, ksize / 2,
                           1, -1);
    if (!last || o->add_last_bn) {
      snprintf(nm, sizeof nm, "%s.bn%d", name, i + 1);
      branch = dt_graph_bn(g, nm, branch, !last);
    }
  }
  snprintf(nm, sizeof nm, "%s.se", name);
  branch = se_layer(g, nm, branch, o->reduction);
  int shortcut = shortcut_in;
  if (dt_graph_shape(g, x).c != out_ch) {
    snprintf(nm, sizeof nm, "%s.shortcut.conv", name);
    shortcut = dt_graph_conv(g, nm, shortcut_in, out_ch, 1, stride, 0, 1, -1);
  }
  return dt_graph_add(g, branch, shortcut);
}

void dt_build_se_resnet_preact(const dt_config *cfg, dt_graph *g, int classes) {
  block_opts o = {cfg->model_block_type == DT_MODEL_BLOCK_TYPE_BOTTLENECK,
                  cfg->model_remove_first_relu, cfg->model_add_last_bn,
                  (int)cfg->model_se_reduction};
  int depth = (int)cfg->model_depth;
  int n_blocks = o.bottleneck ? (depth - 2) / 9 : (depth - 2) / 6;
  int c0 = (int)cfg->model_initial_channels, e = o.bottleneck ? 4 : 1;
  int channels[3] = {c0, 2 * c0 * e, 4 * c0 * e};
  int x = dt_graph_conv(g, "conv", 0, c0, 3, 1, 1, 1, -1);
  for (int st = 0; st < 3; st++) {
    for (int b = 0; b < n_blocks; b++) {
      char name[64];
      snprintf(name, sizeof name, "stage%d.block%d", st + 1, b + 1);
      bool preact = b == 0 && cfg->model_preact_stage.v[st];
      x = block(g, name, x, channels[st], b == 0 && st > 0 ? 2 : 1, preact, &o);
    }
  }
  x = dt_graph_bn(g, "bn", x, true);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
