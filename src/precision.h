/* precision.h: rounding fp32 values to bfloat16 and IEEE half (binary16), kept in fp32 storage.
 *
 * The CPU backend emulates reduced-precision convolutions (backend.h, set_precision) by
 * rounding their operands with these and running the fp32 primitive: a product of two
 * values with at most 11 significant bits is exact in fp32, so the result has the numerics
 * of bf16 / fp16 tensor cores with fp32 accumulation. Bit manipulation on the uint32 pattern
 * (no _Float16), one fp32 addition for the fp16 subnormals, branch-free so that the array
 * loops vectorise (with plain SSE2 too).
 *
 * Both round to nearest, ties to even; NaN stays NaN (made quiet), +-inf and -0 stay.
 * bf16 keeps the top 16 bits of the pattern (finite values past the largest bf16 round to
 * +-inf). fp16: |x| >= 65520 (halfway past 65504, the largest half) becomes +-inf; below
 * 2^-14 (the smallest normal half) values round to multiples of 2^-24 (the half subnormals),
 * so |x| <= 2^-25 becomes +-0. Every result is exactly representable in the format. */
#ifndef DT_PRECISION_H
#define DT_PRECISION_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "config.h"

static inline uint32_t dt_precision_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static inline float dt_precision_float(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* c ? x : y by masks: with several ternaries GCC keeps branches and the loops no longer
 * vectorise. */
static inline uint32_t dt_precision_select(int c, uint32_t x, uint32_t y) {
  return y ^ ((x ^ y) & (0u - (uint32_t)c));
}

/* The bf16 rounding of the fp32 pattern u (a pattern whose low 16 bits are zero). The
 * magnitude is compared as int32 (SSE2 has no unsigned compares). */
static inline uint32_t dt_round_bf16_bits(uint32_t u) {
  const int32_t a = (int32_t)(u & 0x7fffffffu);
  /* RNE on the 16 dropped bits; a carry out of the mantissa bumps the exponent, which is the
   * right result (up to +-inf from the largest finite values). */
  const uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  const uint32_t nan = (u | 0x00400000u) & 0xffff0000u; /* the quiet bit survives the cut */
  return dt_precision_select(a > 0x7f800000, nan, rne);
}

/* The fp16 rounding of the fp32 pattern u, as an fp32 pattern. */
static inline uint32_t dt_round_fp16_bits(uint32_t u) {
  const uint32_t sign = u & 0x80000000u, ua = u & 0x7fffffffu;
  const int32_t a = (int32_t)ua;
  /* Normal halves (|x| >= 2^-14): 10 of the 23 mantissa bits stay; RNE on the other 13. */
  const uint32_t normal = (ua + 0xfffu + ((ua >> 13) & 1u)) & ~0x1fffu;
  /* Subnormal halves, |x| < 2^-14: multiples of 2^-24. In 0.5 + |x| (in [0.5, 0.5 + 2^-14))
   * the fp32 ulp is 2^-24, so the addition itself rounds |x| to that grid, ties to even
   * (0.5 is an even multiple); subtracting 0.5 is exact. This uses the default rounding mode
   * (round to nearest, never changed here) and needs the compiler not to reassociate
   * (no -ffast-math); the exact integer version, RNE on a variable number of low bits, runs
   * 2.4 times slower on SSE2, which has no per-lane variable shifts. */
  const uint32_t sub = dt_precision_bits((dt_precision_float(ua) + 0.5f) - 0.5f);
  const uint32_t nan = (ua | 0x00400000u) & 0xffffe000u;
  uint32_t r = dt_precision_select(a >= 0x38800000, normal, sub); /* >= 2^-14 */
  r = dt_precision_select(a >= 0x477ff000, 0x7f800000u, r);       /* >= 65520 (and inf): inf */
  r = dt_precision_select(a > 0x7f800000, nan, r);
  return sign | r;
}

static inline float dt_round_bf16(float x) {
  return dt_precision_float(dt_round_bf16_bits(dt_precision_bits(x)));
}

static inline float dt_round_fp16(float x) {
  return dt_precision_float(dt_round_fp16_bits(dt_precision_bits(x)));
}

/* dst[i] = round(src[i]) for i < n; dst may be src (in place), otherwise they must not
 * overlap. Large arrays are split over the OpenMP threads. */
void dt_round_bf16_array(const float *src, float *dst, size_t n);
void dt_round_fp16_array(const float *src, float *dst, size_t n);
/* The rounding of `precision`; fp32 copies (or does nothing in place). */
void dt_round_array(dt_precision precision, const float *src, float *dst, size_t n);

/* "fp32", "bf16" or "fp16" ("?" for a value outside the enum). */
const char *dt_precision_name(dt_precision precision);
/* The precision named by s (one of the names above); false when s names none. */
bool dt_precision_parse(const char *s, dt_precision *out);
/* The precision of train.precision. */
dt_precision dt_precision_of(dt_train_precision p);

#endif
