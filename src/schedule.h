/* schedule.h: learning rate per iteration (docs/reference-experiments.md "Schedules"): lr(t) = base
 * * f(t), where base = optim.lr * train.batch_size / optim.reference_batch (linear scaling rule)
 * and f is the warmup over the first warmup epochs followed by the main schedule, whose clock
 * starts at the end of warmup (t counts steps after warmup, T = main steps, m = min_factor):
 *   warmup    linear s + (1 - s) t/Tw, or exponential s + (1 - s) (t/Tw)^exponent (without
 *             the reference's doubled base lr)
 *   constant  f = 1
 *   multistep f = gamma^k, k = milestones (in epochs) passed
 *   cosine    f = m + (1 - m) (1 + cos(pi t / T)) / 2
 *   sgdr      the cosine restarted over periods t0, t0 t_mul, ... epochs
 *   linear    f = 1 - (1 - m) t / T
 *   poly      f = m + (1 - m) (1 - t / T)^power */
#ifndef DT_SCHEDULE_H
#define DT_SCHEDULE_H

#include "config.h"

typedef struct {
  double base_lr;
  long steps_per_epoch, total_steps, warmup_steps;
  dt_schedule_type kind; /* schedule.type */
  bool warmup_exponential;
  double gamma, min_factor, warmup_start, warmup_exponent, t_mul, power;
  long t0_steps;
  long milestones[DT_LIST_MAX];
  int n_milestones;
} dt_schedule;

void dt_schedule_init(dt_schedule *s, const dt_config *cfg, long steps_per_epoch);
/* Learning rate of global iteration t (0-based). */
double dt_schedule_lr(const dt_schedule *s, long t);

#endif
