/* cli_eval.h: the commands that use a trained checkpoint outside a training run.
 *   dtrain --eval RUN_DIR|CHECKPOINT.h5 [CONFIG.ini] [--set ...] [--csv FILE]
 *     the test split of the checkpoint's configuration (its /config, or CONFIG.ini; --set
 *     overrides either), evaluated on one or many ranks exactly as training evaluates it:
 *     loss, top-1, top-5, per-class accuracy and the confusion matrix.
 *   dtrain --predict CHECKPOINT.h5 IMAGES.h5... [--top K] [--set ...]
 *     the top-K classes and probabilities of every image of files packed by
 *     tools/dtrain_tools/pack_images.py --predict-images, as CSV on stdout. */
#ifndef DT_CLI_EVAL_H
#define DT_CLI_EVAL_H

#include "backend.h"
#include "comm/comm.h"

typedef struct {
  dt_device device;
  const char *config_path; /* NULL: the checkpoint's own configuration */
  const char *const *sets; /* --set overrides */
  int n_sets;
  const char *csv_path; /* --eval: also write the per-class table here (NULL: no) */
  int top;              /* --predict: classes per image */
} dt_cli_opts;

/* Exit status as main returns it: 0, 1 (bad input, message printed), 3 (fatal). */
int dt_cli_eval(const char *target, const dt_cli_opts *o, dt_comm *comm);
int dt_cli_predict(const char *checkpoint, const char *const *inputs, int n_inputs,
                   const dt_cli_opts *o, dt_comm *comm);

#endif
