/* loss_scale.h: loss scaling for low-precision gradients (train.loss_scale). The loss
 * gradient is multiplied by the scale S before backward, so small gradients survive fp16's
 * narrow range, and the optimizer divides the gradients by S again. Dynamic scaling (as
 * PyTorch's GradScaler): a step whose gradients overflow (are not finite) is skipped and S
 * halved; after `growth` finite steps in a row S doubles. With a power-of-two S the scaling
 * is exact in fp32, so a run with fixed scaling and no overflow equals an unscaled one bit
 * for bit. */
#ifndef DT_LOSS_SCALE_H
#define DT_LOSS_SCALE_H

#include "config.h"

/* Below this the run is declared diverged: gradients are non-finite at every scale. */
#define DT_LOSS_SCALE_MIN 0x1p-24

typedef struct {
  bool active;  /* off: S = 1 and every non-finite gradient goes to train.nonfinite */
  bool dynamic; /* overflow halves S and skips the step */
  double scale; /* S */
  long good;    /* finite steps since S last changed (checkpointed with S) */
  long growth;  /* double S after this many good steps */
} dt_loss_scale;

typedef enum {
  DT_SCALE_APPLY,    /* finite gradients: update with grad_scale 1 / S */
  DT_SCALE_OVERFLOW, /* dynamic: skip the step, S has been halved */
  DT_SCALE_DIVERGED, /* dynamic: S fell below DT_LOSS_SCALE_MIN */
  DT_SCALE_NONFINITE /* not dynamic: non-finite gradients, for train.nonfinite to handle */
} dt_scale_verdict;

void dt_loss_scale_init(dt_loss_scale *ls, const dt_config *cfg);
/* The verdict on a step whose gradients are `finite` (on every rank), with S updated. */
dt_scale_verdict dt_loss_scale_update(dt_loss_scale *ls, bool finite);
/* The factor the optimizer multiplies the gradients by: 1 / S. */
float dt_loss_scale_unscale(const dt_loss_scale *ls);

#endif
