/* model.c: family dispatch, parameter table, cached graphs and the --dry-run summary. */
#include "models/model.h"

#include <stdlib.h>
#include <string.h>

static const struct {
  const char *name;
  dt_model_build_fn build;
} families[] = {
    {"resnet_preact", dt_build_resnet_preact},
    {"resnet", dt_build_resnet},
    {"wrn", dt_build_wrn},
    {"densenet", dt_build_densenet},
    {"pyramidnet", dt_build_pyramidnet},
    {"resnext", dt_build_resnext},
    {"shake_shake", dt_build_shake_shake},
    {"se_resnet_preact", dt_build_se_resnet_preact},
    {"vgg", dt_build_vgg},
};

dt_model_build_fn dt_model_family(const char *name) {
  for (size_t i = 0; i < DT_ARRAY_LEN(families); i++)
    if (strcmp(families[i].name, name) == 0) return families[i].build;
  return NULL;
}

bool dt_model_fan_out(const dt_config *cfg) {
  /* SE-ResNet-preact has its own initializer, always fan_out (docs/reference-experiments.md
   * "SE-ResNet-preact"); wrn.yaml selects fan_in, every other reference config fan_out
   * (docs/reference-experiments.md "Common conventions"). */
  if (strcmp(cfg->model_name, "se_resnet_preact") == 0) return true;
  if (strcmp(cfg->model_init_mode, "auto") == 0) return strcmp(cfg->model_name, "wrn") != 0;
  return strcmp(cfg->model_init_mode, "kaiming_fan_out") == 0;
}

dt_model *dt_model_create(const dt_config *cfg, dt_backend *be, int channels, int height,
                          int width, int classes) {
  dt_model *m = dt_xcalloc(1, sizeof *m);
  m->cfg = cfg;
  m->be = be;
  m->build = dt_model_family(cfg->model_name);
  DT_CHECK(m->build != NULL);
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
