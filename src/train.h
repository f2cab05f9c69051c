/* train.h: the training driver: setup, the epoch loop, evaluation, --bench and --dry-run. */
#ifndef DT_TRAIN_H
#define DT_TRAIN_H

#include "backend.h"
#include "config.h"

/* Each returns a process exit status: 0 on success, 1 on an input error (the message has
 * been printed), 2 on a runtime failure. */
int dt_train_run(const dt_config *cfg, dt_device device);
int dt_train_bench(const dt_config *cfg, dt_device device, long steps);
int dt_train_dry_run(const dt_config *cfg);

#endif
