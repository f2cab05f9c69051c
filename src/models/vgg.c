/* vgg.c: VGG-like network with batch norm for CIFAR-type inputs (docs/reference-experiments.md
 * "VGG", with a ReLU after every conv as the current reference code has it). Stage s (`stageS`,
 * 1-based) repeats vgg_layers[s] times conv3x3(pad 1, with bias, `convI`,
 * 0-based) -> [BN `bnI` if use_bn] -> ReLU, then max-pools 2x2/2; then flatten -> FC. The
 * defaults (64, 128, 256, 512, 512 channels; 2, 2, 3, 3, 3 convs) are "VGG-15 BN". Five pools need
 * inputs of at least 32x32 (config.c refuses the 28x28 datasets). The conv bias is PyTorch's
 * default U(+-1/sqrt(fan_in)) (the current reference code; docs/reference-experiments.md "Code
 * generations"). */
#include <stdio.h>

#include "models/model.h"

void dt_build_vgg(const dt_config *cfg, dt_graph *g, int classes) {
  int x = 0;
  for (int st = 0; st < cfg->model_vgg_channels.n; st++) {
    int out_ch = (int)cfg->model_vgg_channels.v[st];
    for (int i = 0; i < cfg->model_vgg_layers.v[st]; i++) {
      char nm[64];
      int fan_in = dt_graph_shape(g, x).c * 3 * 3;
      snprintf(nm, sizeof nm, "stage%d.conv%d", st + 1, i);
      x = dt_graph_conv(g, nm, x, out_ch, 3, 1, 1, 1, -1);
      x = dt_graph_bias(g, nm, x, fan_in);
      if (cfg->model_use_bn) {
        snprintf(nm, sizeof nm, "stage%d.bn%d", st + 1, i);
        x = dt_graph_bn(g, nm, x, true);
      } else {
        x = dt_graph_relu(g, x);
      }
    }
    x = dt_graph_pool(g, x, DT_POOL_MAX, 2, 2, 0);
  }
  dt_graph_linear(g, "fc", x, classes);
}
