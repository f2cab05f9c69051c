/* loss_scale.c: the loss-scale state machine (loss_scale.h). */
#include "loss_scale.h"

#include <string.h>

#include "precision.h"

void dt_loss_scale_init(dt_loss_scale *ls, const dt_config *cfg) {
  memset(ls, 0, sizeof *ls);
  const bool fp16 = dt_precision_of(cfg->train_precision) == DT_PRECISION_FP16;
  switch (cfg->train_loss_scale) {
    case DT_TRAIN_LOSS_SCALE_AUTO: ls->dynamic = ls->active = fp16; break;
    case DT_TRAIN_LOSS_SCALE_DYNAMIC: ls->dynamic = ls->active = true; break;
    case DT_TRAIN_LOSS_SCALE_FIXED: ls->active = true; break;
    case DT_TRAIN_LOSS_SCALE_OFF: break;
  }
  ls->scale = ls->active ? cfg->train_loss_scale_init : 1.0;
  ls->growth = cfg->train_loss_scale_growth;
}

dt_scale_verdict dt_loss_scale_update(dt_loss_scale *ls, bool finite) {
  if (!finite && !ls->dynamic) return DT_SCALE_NONFINITE;
  if (!finite) {
    ls->scale *= 0.5;
    ls->good = 0;
    return ls->scale < DT_LOSS_SCALE_MIN ? DT_SCALE_DIVERGED : DT_SCALE_OVERFLOW;
  }
  if (ls->dynamic && ++ls->good >= ls->growth) {
    ls->scale *= 2.0;
    ls->good = 0;
  }
  return DT_SCALE_APPLY;
}

float dt_loss_scale_unscale(const dt_loss_scale *ls) { return (float)(1.0 / ls->scale); }
