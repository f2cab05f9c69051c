/* resnet_preact.c: pre-activation ResNet for CIFAR-type inputs (docs/reference-experiments.md
 * "ResNet-preact").
 *   conv3x3(C_in -> c0) -> stage1 (stride 1) -> stage2 (2) -> stage3 (2) -> BN -> ReLU -> GAP -> FC
 * Basic blocks (depth 6n+2): BN1 [ReLU] conv3x3(s) BN2 ReLU conv3x3 [BN3] + shortcut.
 * Bottleneck (9n+2): BN1 [ReLU] conv1x1 BN2 ReLU conv3x3(s) BN3 ReLU conv1x1 [BN4] + shortcut.
 * Shortcut: identity, or conv1x1 with stride s and no BN (`shortcut.conv`). With
 * preact_stage[i] the first block of stage i feeds the pre-activated input to both the branch
 * and the shortcut. No ReLU after the addition. The addition is fused into the last conv.
 * The block is dt_block_preact (blocks.c), shared with se_resnet_preact. */
#include <stdio.h>
#include <string.h>

#include "models/blocks.h"
#include "models/model.h"

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_resnet_preact(const dt_config *cfg, const char *src, int height,
                                    int width) {
  (void)height, (void)width;
  return dt_model_check_residual_depth(cfg, src);
}

/* ---- the network ---- */

void dt_build_resnet_preact(const dt_config *cfg, dt_graph *g, int classes) {
  dt_preact_block o = {cfg->model_block_type == DT_MODEL_BLOCK_TYPE_BOTTLENECK,
                       cfg->model_remove_first_relu, cfg->model_add_last_bn, 0};
  int depth = (int)cfg->model_depth;
  int n_blocks = o.bottleneck ? (depth - 2) / 9 : (depth - 2) / 6;
  int c0 = (int)cfg->model_initial_channels;
  int expansion = o.bottleneck ? 4 : 1;
  /* docs/reference-experiments.md "ResNet", "ResNet-preact": stage channels c0, 2*c0*e, 4*c0*e (the
   * bottleneck stage 1 keeps c0). */
  int channels[3] = {c0, 2 * c0 * expansion, 4 * c0 * expansion};
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
