/* se_resnet_preact.c: pre-activation ResNet with squeeze-and-excitation
 * (docs/reference-experiments.md "SE-ResNet-preact"). The network and blocks are those of
 * resnet_preact.c (docs/reference-experiments.md "ResNet-preact": remove_first_relu, add_last_bn,
 * preact_stage), plus an SE layer on the branch output after the last conv and the optional last
 * BN, before the addition:
 *   GAP -> FC(C -> floor(C/r), bias) -> ReLU -> FC(-> C, bias) -> sigmoid -> scale the channels
 * (`se.fc1`, `se.fc2`, r = se_reduction). The SE scaling sits between the last conv and the
 * addition, so the addition is a node of its own. Initialisation is always Kaiming fan_out
 * (model.c). The block is dt_block_preact (blocks.c), shared with resnet_preact. */
#include <stdio.h>
#include <string.h>

#include "models/blocks.h"
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

void dt_build_se_resnet_preact(const dt_config *cfg, dt_graph *g, int classes) {
  dt_preact_block o = {cfg->model_block_type == DT_MODEL_BLOCK_TYPE_BOTTLENECK,
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
      x = dt_block_preact(g, name, x, channels[st], b == 0 && st > 0 ? 2 : 1, preact, &o);
    }
  }
  x = dt_graph_bn(g, "bn", x, true);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, classes);
}
