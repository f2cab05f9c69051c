/* rng.h: counter-based random numbers. A stream is keyed by (seed, a, b), for example (seed, epoch,
 * sample index), so the numbers a sample sees never depend on which rank or thread draws them
 * (docs/architecture.md "One step"). SplitMix64 mixes the key; the stream is xoshiro256** seeded
 * from it. */
#ifndef DT_RNG_H
#define DT_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } dt_rng;

/* SplitMix64's finaliser: a bijective 64-bit mix (also the dropout masks' hash, backend.h). */
static inline uint64_t dt_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* SplitMix64: advance the state x by the golden-ratio increment and mix it. */
static inline uint64_t dt_splitmix64(uint64_t *x) { return dt_mix64(*x += 0x9E3779B97F4A7C15ull); }

/* Stream purposes, so that two uses of the same (seed, a, b) never share numbers. */
enum {
  DT_RNG_SHUFFLE = 1, DT_RNG_AUGMENT = 2, DT_RNG_INIT = 3, DT_RNG_BATCH = 4, DT_RNG_DROPOUT = 5,
};

static inline dt_rng dt_rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b) {
  uint64_t x = seed;
  uint64_t h = dt_splitmix64(&x);
  x = h ^ (purpose * 0xD1B54A32D192ED03ull);
  h = dt_splitmix64(&x);
  x = h ^ a;
  h = dt_splitmix64(&x);
  x = h ^ (b * 0x9E3779B97F4A7C15ull);
  dt_rng r;
  for (int i = 0; i < 4; i++) r.s[i] = dt_splitmix64(&x);
  return r;
}

static inline uint64_t dt_rng_rotl(uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }

static inline uint64_t dt_rng_u64(dt_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = dt_rng_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = dt_rng_rotl(s[3], 45);
  return result;
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double dt_rng_uniform(dt_rng *r) { return (double)(dt_rng_u64(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0, without modulo bias (Lemire). */
static inline uint64_t dt_rng_below(dt_rng *r, uint64_t n) {
  uint64_t x = dt_rng_u64(r);
  __uint128_t m = (__uint128_t)x * n;
  uint64_t l = (uint64_t)m;
  if (l < n) {
    uint64_t t = -n % n;
    while (l < t) {
      x = dt_rng_u64(r);
      m = (__uint128_t)x * n;
      l = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

/* Standard normal (Box-Muller, one value per call). */
double dt_rng_normal(dt_rng *r);

#endif
