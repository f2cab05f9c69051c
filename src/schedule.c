/* schedule.c: warmup + constant / multistep / cosine, stepped per iteration. */
#include "schedule.h"

#include <math.h>
#include <string.h>

void dt_schedule_init(dt_schedule *s, const dt_config *cfg, long steps_per_epoch) {
  memset(s, 0, sizeof *s);
  s->base_lr = cfg->optim_lr * (double)cfg->train_batch_size / (double)cfg->optim_reference_batch;
  s->steps_per_epoch = steps_per_epoch;
  s->total_steps = cfg->train_epochs * steps_per_epoch;
  s->warmup_steps = cfg->schedule_warmup_epochs * steps_per_epoch;
  s->type = strcmp(cfg->schedule_type, "constant") == 0 ? 0
            : strcmp(cfg->schedule_type, "multistep") == 0 ? 1 : 2;
  s->gamma = cfg->schedule_gamma;
  s->min_factor = cfg->schedule_min_factor;
  s->warmup_start = cfg->schedule_warmup_start_factor;
  s->n_milestones = cfg->schedule_milestones.n;
  for (int i = 0; i < s->n_milestones; i++)
    s->milestones[i] = cfg->schedule_milestones.v[i] * steps_per_epoch;
}

double dt_schedule_lr(const dt_schedule *s, long t) {
  if (t < s->warmup_steps)
    return s->base_lr * (s->warmup_start + (1.0 - s->warmup_start) * (double)t / (double)s->warmup_steps);
  long tm = t - s->warmup_steps;
  long main_steps = s->total_steps - s->warmup_steps;
  double f = 1.0;
  if (s->type == 1) {
    for (int i = 0; i < s->n_milestones; i++)
      if (tm >= s->milestones[i]) f *= s->gamma;
  } else if (s->type == 2) {
    double x = main_steps > 0 ? (double)DT_MIN(tm, main_steps) / (double)main_steps : 1.0;
    f = s->min_factor + (1.0 - s->min_factor) * 0.5 * (1.0 + cos(3.14159265358979323846 * x));
  }
  return s->base_lr * f;
}
