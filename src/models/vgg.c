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

/* ---- configuration checks (dt_model_validate_fn, run by dt_config_validate) ---- */

dt_status dt_validate_vgg(const dt_config *cfg, const char *src, int height, int width) {
  const dt_intlist *ch = &cfg->model_vgg_channels, *ly = &cfg->model_vgg_layers;
  if (ch->n == 0 || ch->n != ly->n)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [model] vgg_channels has %d values and vgg_layers %d: give one "
                        "value of each per stage (at least one stage)",
                        src, ch->n, ly->n);
  if (height > 0 && width > 0) {
    int side = DT_MIN(height, width);
    if (side >> ch->n < 1)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [model] name = vgg with %d stages halves the image %d times: the "
                          "%dx%d images of [data] dataset = %s would vanish (docs/reference-experiments.md \"VGG\": VGG is "
                          "CIFAR-only; at least %dx%d is needed)",
                          src, ch->n, ch->n, height, width,
                          dt_data_dataset_str(cfg->data_dataset), 1 << ch->n, 1 << ch->n);
  }
  return DT_OK;
}

/* ---- the network ---- */

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
