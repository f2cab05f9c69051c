/* schedule.h: learning rate per iteration (SPEC 4.2, HEAD): lr(t) = base * f(t), where
 * base = optim.lr * train.batch_size / optim.reference_batch (linear scaling rule) and f is
 * linear warmup over the first warmup epochs followed by the main schedule, whose clock
 * starts at the end of warmup:
 *   constant  f = 1
 *   multistep f = gamma^k, k = milestones (in epochs) passed
 *   cosine    f = m + (1 - m) (1 + cos(pi t / T)) / 2, T = main steps, m = min_factor */
#ifndef DT_SCHEDULE_H
#define DT_SCHEDULE_H

#include "config.h"

typedef struct {
  double base_lr;
  long steps_per_epoch, total_steps, warmup_steps;
  int type; /* 0 constant, 1 multistep, 2 cosine */
  double gamma, min_factor, warmup_start;
  long milestones[DT_LIST_MAX];
  int n_milestones;
} dt_schedule;

void dt_schedule_init(dt_schedule *s, const dt_config *cfg, long steps_per_epoch);
/* Learning rate of global iteration t (0-based). */
double dt_schedule_lr(const dt_schedule *s, long t);

#endif
