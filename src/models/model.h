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

/* A family's checks of its [model] keys (depth rules, widths that must divide...), run by
 * dt_config_validate: DT_OK, or DT_ERR_CONFIG with one message that starts with `src` (the
 * configuration's origin). height x width: the dataset's images, 0 x 0 when unknown. */
typedef dt_status (*dt_model_validate_fn)(const dt_config *cfg, const char *src, int height,
                                          int width);

/* A network family: how it is built and what it requires of the configuration. */
typedef struct {
  dt_model_build_fn build;
  dt_model_validate_fn validate;
} dt_model_family;

/* The family of a model.name value (every value has one). */
const dt_model_family *dt_model_family_of(dt_model_name name);
/* The checks of cfg->model_name's family (its validate). */
dt_status dt_model_validate(const dt_config *cfg, const char *src, int height, int width);
/* For the validators: the depth must be per*n + offset for some n >= 1
 * (docs/reference-experiments.md "Models": blocks per stage from the depth); `accepted` lists
 * a few valid depths for the message, which names the block type when names_block_type. */
dt_status dt_model_check_depth(const dt_config *cfg, const char *src, long per, long offset,
                               bool names_block_type, const char *accepted);
/* The depth rule of the residual families with basic and bottleneck blocks (resnet,
 * resnet_preact, se_resnet_preact, pyramidnet): 6n+2 (basic) or 9n+2 (bottleneck). */
dt_status dt_model_check_residual_depth(const dt_config *cfg, const char *src);
/* For the validators: images of height x width (0 x 0: not known yet) that the family cannot
 * take (fits false) are refused with a message saying which sizes it takes (`takes`). */
dt_status dt_model_check_image(const dt_config *cfg, const char *src, int height, int width,
                               bool fits, const char *takes);
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

/* Their validators (dt_model_validate_fn), each beside its builder. */
dt_status dt_validate_resnet_preact(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_resnet(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_wrn(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_densenet(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_pyramidnet(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_resnext(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_shake_shake(const dt_config *cfg, const char *src, int height, int width);
dt_status dt_validate_se_resnet_preact(const dt_config *cfg, const char *src, int height,
                                       int width);
dt_status dt_validate_vgg(const dt_config *cfg, const char *src, int height, int width);

#endif
