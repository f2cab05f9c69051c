/* rng.c: the out-of-line parts of the counter-based generator. */
#include "rng.h"

#include <math.h>

double dt_rng_normal(dt_rng *r) {
  double u1 = dt_rng_uniform(r), u2 = dt_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
