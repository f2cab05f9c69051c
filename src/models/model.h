/* model.h: a network family instantiated from the config: its parameter table and arenas,
 * and one planned graph per batch size (training and inference plan separately). */
#ifndef DT_MODEL_H
#define DT_MODEL_H

#include <stdio.h>

#include "config.h"
#include "nn/graph.h"

typedef struct dt_model dt_model;
/* A family builder adds the nodes of the network to g, reading its keys from cfg. */
typedef void (*dt_model_build_fn)(const dt_config *cfg, dt_graph *g, int classes);

#define DT_MODEL_MAX_GRAPHS 8

struct dt_model {
  const dt_config *cfg;
  dt_backend *be;
  dt_model_build_fn build;
  int channels, height, width, classes;
  dt_params params;
  struct {
    int n, slot;
    bool inference;
    dt_graph *g;
  } graphs[DT_MODEL_MAX_GRAPHS];
  int n_graphs;
};

/* The family builder of cfg->model_name. */
dt_model_build_fn dt_model_family(const char *name);
/* Build the parameter table (from a graph of batch 1), allocate the arenas and initialise the
 * weights from train.seed. be may be NULL for a summary only (no arenas). */
dt_model *dt_model_create(const dt_config *cfg, dt_backend *be, int channels, int height,
                          int width, int classes);
/* The planned graph for batch n (created on first use and cached). Graphs of different slots
 * keep separate activations (Dual-Cutout runs two forward passes before either backward). */
dt_graph *dt_model_graph(dt_model *m, int n, bool inference);
dt_graph *dt_model_graph_slot(dt_model *m, int n, bool inference, int slot);
long dt_model_param_count(const dt_model *m);
/* Per-layer summary (layer, kind, output shape, parameters) and totals; returns MACs/image. */
long dt_model_summary(const dt_model *m, FILE *f);
void dt_model_free(dt_model *m);

/* Whether conv and linear weights use Kaiming fan_out (model.init_mode; auto = fan_in for
 * wrn only; se_resnet_preact always fan_out). */
bool dt_model_fan_out(const dt_config *cfg);

/* Family builders (docs/reference-experiments.md "Models"), one per src/models/<family>.c. */
void dt_build_resnet_preact(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_resnet(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_wrn(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_densenet(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_pyramidnet(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_resnext(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_shake_shake(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_se_resnet_preact(const dt_config *cfg, dt_graph *g, int classes);
void dt_build_vgg(const dt_config *cfg, dt_graph *g, int classes);

#endif
