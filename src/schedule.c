/* schedule.c: warmup + constant / multistep / cosine / SGDR / linear / poly, per iteration. */
#include "schedule.h"

#include <math.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

void dt_schedule_init(dt_schedule *s, const dt_config *cfg, long steps_per_epoch) {
  memset(s, 0, sizeof *s);
  s->base_lr = cfg->optim_lr * (double)cfg->train_batch_size / (double)cfg->optim_reference_batch;
  s->steps_per_epoch = steps_per_epoch;
  s->total_steps = cfg->train_epochs * steps_per_epoch;
  s->warmup_steps = cfg->schedule_warmup_epochs * steps_per_epoch;
  s->kind = cfg->schedule_type;
  s->warmup_exponential = cfg->schedule_warmup_type == DT_SCHEDULE_WARMUP_TYPE_EXPONENTIAL;
  s->warmup_exponent = cfg->schedule_warmup_exponent;
  s->gamma = cfg->schedule_gamma;
  s->min_factor = cfg->schedule_min_factor;
  s->warmup_start = cfg->schedule_warmup_start_factor;
  s->t0_steps = cfg->schedule_t0 * steps_per_epoch;
  s->t_mul = cfg->schedule_t_mul;
  s->power = cfg->schedule_poly_power;
  s->n_milestones = cfg->schedule_milestones.n;
  for (int i = 0; i < s->n_milestones; i++)
    s->milestones[i] = cfg->schedule_milestones.v[i] * steps_per_epoch;
}

static double cosine(double m, double x) { return m + (1.0 - m) * 0.5 * (1.0 + cos(PI * x)); }

double dt_schedule_lr(const dt_schedule *s, long t) {
  if (t < s->warmup_steps) {
    double x = (double)t / (double)s->warmup_steps;
    if (s->warmup_exponential) x = pow(x, s->warmup_exponent);
    return s->base_lr * (s->warmup_start + (1.0 - s->warmup_start) * x);
  }
  long tm = t - s->warmup_steps;
  long main_steps = s->total_steps - s->warmup_steps;
  double x = main_steps > 0 ? (double)DT_MIN(tm, main_steps) / (double)main_steps : 1.0;
  double m = s->min_factor, f = 1.0;
  switch (s->kind) {
    case DT_SCHEDULE_TYPE_CONSTANT:
      break;
    case DT_SCHEDULE_TYPE_MULTISTEP:
      for (int i = 0; i < s->n_milestones; i++)
        if (tm >= s->milestones[i]) f *= s->gamma;
      break;
    case DT_SCHEDULE_TYPE_COSINE:
      f = cosine(m, x);
      break;
    case DT_SCHEDULE_TYPE_SGDR: {
      double period = (double)s->t0_steps, start = 0;
      while (start + period <= (double)tm && period > 0) {
        start += period;
        period *= s->t_mul;
      }
      f = cosine(m, ((double)tm - start) / period);
      break;
    }
    case DT_SCHEDULE_TYPE_LINEAR:
      f = 1.0 - (1.0 - m) * x;
      break;
    case DT_SCHEDULE_TYPE_POLY:
      f = m + (1.0 - m) * pow(1.0 - x, s->power);
      break;
  }
  return s->base_lr * f;
}
