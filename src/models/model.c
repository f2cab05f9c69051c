/* model.c: family dispatch, parameter table, cached graphs and the --dry-run summary. */
#include "models/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every model.name value and its family (test_config checks that none is missing). */
static const dt_model_family families[] = {
    [DT_MODEL_NAME_RESNET_PREACT] = {dt_build_resnet_preact, dt_validate_resnet_preact},
    [DT_MODEL_NAME_RESNET] = {dt_build_resnet, dt_validate_resnet},
    [DT_MODEL_NAME_WRN] = {dt_build_wrn, dt_validate_wrn},
    [DT_MODEL_NAME_DENSENET] = {dt_build_densenet, dt_validate_densenet},
    [DT_MODEL_NAME_PYRAMIDNET] = {dt_build_pyramidnet, dt_validate_pyramidnet},
    [DT_MODEL_NAME_RESNEXT] = {dt_build_resnext, dt_validate_resnext},
    [DT_MODEL_NAME_SHAKE_SHAKE] = {dt_build_shake_shake, dt_validate_shake_shake},
    [DT_MODEL_NAME_SE_RESNET_PREACT] = {dt_build_se_resnet_preact, dt_validate_se_resnet_preact},
    [DT_MODEL_NAME_VGG] = {dt_build_vgg, dt_validate_vgg},
};

const dt_model_family *dt_model_family_of(dt_model_name name) {
  DT_CHECK((size_t)name < DT_ARRAY_LEN(families));
  const dt_model_family *f = &families[name];
  DT_CHECK(f->build != NULL && f->validate != NULL);
  return f;
}

dt_status dt_model_validate(const dt_config *cfg, const char *src, int height, int width) {
  return dt_model_family_of(cfg->model_name)->validate(cfg, src, height, width);
}

dt_status dt_model_check_depth(const dt_config *cfg, const char *src, long per, long offset,
                               bool names_block_type, const char *accepted) {
  long depth = cfg->model_depth;
  if (depth >= per + offset && (depth - offset) % per == 0) return DT_OK;
  long below = depth > offset ? (depth - offset) / per * per + offset : offset;
  long above = below + per;
  char nearest[64];
  if (below >= offset + per)
    snprintf(nearest, sizeof nearest, "%ld or %ld", below, above);
  else
    snprintf(nearest, sizeof nearest, "%ld", above);
  char fit[96];
  snprintf(fit, sizeof fit, "name = %s%s%s", dt_model_name_str(cfg->model_name),
           names_block_type ? " with block_type = " : "",
           names_block_type ? dt_model_block_type_str(cfg->model_block_type) : "");
  return dt_error_set(DT_ERR_CONFIG,
                      "%s: [model] depth = %ld does not fit %s: the depth must be %ldn+%ld "
                      "(accepted: %s; nearest: %s)",
                      src, depth, fit, per, offset, accepted, nearest);
}

dt_status dt_model_check_residual_depth(const dt_config *cfg, const char *src) {
  /* 2 layers outside the stages; 3 stages of blocks with 2 (basic) or 3 (bottleneck) convs */
  switch (cfg->model_block_type) {
    case DT_MODEL_BLOCK_TYPE_BASIC:
      return dt_model_check_depth(cfg, src, 6, 2, true, "20, 32, 44, 56, 110, ...");
    case DT_MODEL_BLOCK_TYPE_BOTTLENECK:
      return dt_model_check_depth(cfg, src, 9, 2, true, "29, 56, 110, 164, 272, ...");
  }
  DT_FATAL("model.block_type %d outside its enum", (int)cfg->model_block_type);
}

dt_status dt_model_check_image(const dt_config *cfg, const char *src, int height, int width,
                               bool fits, const char *takes) {
  if (height <= 0 || width <= 0 || fits) return DT_OK;
  const bool file = cfg->data_dataset == DT_DATA_DATASET_HDF5;
  return dt_error_set(DT_ERR_CONFIG,
                      "%s: [model] name = %s takes images %s, but those of [data] dataset = %s "
                      "%s%sare %dx%d",
                      src, dt_model_name_str(cfg->model_name), takes,
                      dt_data_dataset_str(cfg->data_dataset), file ? cfg->data_path : "",
                      file ? " " : "", height, width);
}

bool dt_model_fan_out(const dt_config *cfg) {
  /* SE-ResNet-preact has its own initializer, always fan_out (docs/reference-experiments.md
   * "SE-ResNet-preact"); wrn.yaml selects fan_in, every other reference config fan_out
   * (docs/reference-experiments.md "Common conventions"). */
  if (cfg->model_name == DT_MODEL_NAME_SE_RESNET_PREACT) return true;
  switch (cfg->model_init_mode) {
    case DT_MODEL_INIT_MODE_AUTO: return cfg->model_name != DT_MODEL_NAME_WRN;
    case DT_MODEL_INIT_MODE_KAIMING_FAN_OUT: return true;
    case DT_MODEL_INIT_MODE_KAIMING_FAN_IN: return false;
  }
  DT_FATAL("model.init_mode %d outside its enum", (int)cfg->model_init_mode);
}

dt_model *dt_model_create(const dt_config *cfg, dt_backend *be, int channels, int height,
                          int width, int classes) {
  dt_model *m = dt_xcalloc(1, sizeof *m);
  m->cfg = cfg;
  m->be = be;
  m->build = dt_model_family_of(cfg->model_name)->build;
  m->channels = channels;
  m->height = height;
  m->width = width;
  m->classes = classes;
  /* A batch-1 graph registers every parameter in PyTorch order; it also serves the summary. */
  dt_graph *g = dt_graph_create(be, &m->params, (dt_shape){1, channels, height, width}, true);
  m->build(cfg, g, classes);
  m->graphs[0].n = -1; /* the unplanned summary graph */
  m->graphs[0].g = g;
  m->n_graphs = 1;
  if (be) {
    dt_params_alloc(&m->params, be);
    dt_params_init(&m->params, be, (uint64_t)cfg->train_seed, dt_model_fan_out(cfg));
  }
  return m;
}

dt_graph *dt_model_graph(dt_model *m, int n, bool inference) {
  return dt_model_graph_slot(m, n, inference, 0);
}

dt_graph *dt_model_graph_slot(dt_model *m, int n, bool inference, int slot) {
  for (int i = 0; i < m->n_graphs; i++)
    if (m->graphs[i].n == n && m->graphs[i].inference == inference && m->graphs[i].slot == slot)
      return m->graphs[i].g;
  DT_CHECK(m->be != NULL);
  if (m->n_graphs == DT_MODEL_MAX_GRAPHS) { /* evict the oldest planned graph */
    dt_graph_free(m->graphs[1].g);
    memmove(&m->graphs[1], &m->graphs[2], (DT_MODEL_MAX_GRAPHS - 2) * sizeof m->graphs[0]);
    m->n_graphs--;
  }
  dt_graph *g = dt_graph_create(m->be, &m->params, (dt_shape){n, m->channels, m->height, m->width},
                                inference);
  m->build(m->cfg, g, m->classes);
  dt_graph_plan(g);
  m->graphs[m->n_graphs].n = n;
  m->graphs[m->n_graphs].slot = slot;
  m->graphs[m->n_graphs].inference = inference;
  m->graphs[m->n_graphs].g = g;
  m->n_graphs++;
  return g;
}

long dt_model_param_count(const dt_model *m) {
  long total = 0;
  for (int i = 0; i < m->params.count; i++)
    if (!(m->params.items[i].flags & DT_PARAM_BUFFER)) total += (long)m->params.items[i].count;
  return total;
}

long dt_model_summary(const dt_model *m, FILE *f) {
  const dt_graph *g = m->graphs[0].g;
  long macs = 0;
  fprintf(f, "%-4s %-32s %-10s %-16s %12s\n", "#", "layer", "kind", "output (C,H,W)", "params");
  fprintf(f, "%-4s %-32s %-10s %-16s %12s\n", "0", "input", "input", "", "0");
  for (int i = 0; i < g->n_nodes; i++) {
    const dt_node *n = &g->nodes[i];
    char shape[48];
    snprintf(shape, sizeof shape, "%d,%d,%d", n->shape.c, n->shape.h, n->shape.w);
    const char *kind = n->ops->kind;
    char kindbuf[32];
    if (n->ops == &dt_layer_bn && n->relu) kind = "bn+relu";
    if (n->ops == &dt_layer_conv) {
      snprintf(kindbuf, sizeof kindbuf, "conv%dx%d%s", n->ksize, n->ksize, n->residual >= 0 ? "+add" : "");
      kind = kindbuf;
    }
    fprintf(f, "%-4d %-32s %-10s %-16s %12ld\n", i + 1, n->name[0] ? n->name : "-", kind, shape,
            n->n_params);
    macs += n->macs;
  }
  return macs;
}

void dt_model_free(dt_model *m) {
  if (!m) return;
  for (int i = 0; i < m->n_graphs; i++) dt_graph_free(m->graphs[i].g);
  dt_params_free(&m->params, m->be);
  free(m);
}
