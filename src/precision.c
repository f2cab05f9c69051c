/* precision.c: the array forms of the bf16 / fp16 roundings (precision.h) and the names of
 * the precisions. The loops are the scalar roundings inlined (the memcpy bit casts compile
 * to nothing), so the compiler vectorises them. They run on every convolution operand of a
 * reduced-precision net, so on x86-64 with GCC each loop is also compiled for AVX2 and the
 * CPU picks its version when the program loads (target_clones): 2.5 times faster than the
 * SSE2 baseline of a build without -march. Arrays of 64 Ki values and more (activations)
 * are split over the OpenMP threads; smaller ones (weights) run on the caller's thread,
 * where starting the team would cost more than the work. */
#include "precision.h"

#include <omp.h>
#include <string.h>

/* Values per array below which one thread rounds alone. */
#define DT_ROUND_PARALLEL_MIN ((size_t)1 << 16)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DT_ROUND_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DT_ROUND_CLONES
#endif

/* dst may be src: the omp simd is what lets GCC vectorise without checking for overlap. */
DT_ROUND_CLONES static void round_bf16_run(const float *src, float *dst, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) dst[i] = dt_round_bf16(src[i]);
}

DT_ROUND_CLONES static void round_fp16_run(const float *src, float *dst, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) dst[i] = dt_round_fp16(src[i]);
}

/* run over [0, n), in equal contiguous slices per thread for large n. The slices, not an
 * omp for: the OpenMP body is outlined before the clones are made and would only get the
 * baseline code. */
static void round_split(void (*run)(const float *, float *, size_t), const float *src,
                        float *dst, size_t n) {
  if (n < DT_ROUND_PARALLEL_MIN) {
    run(src, dst, n);
    return;
  }
#pragma omp parallel
  {
    const size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
    /* Slice bounds on multiples of 16 values (64 bytes, a cache line and a vector). */
    const size_t blocks = (n + 15) / 16;
    const size_t lo = DT_MIN(n, blocks * t / nt * 16), hi = DT_MIN(n, blocks * (t + 1) / nt * 16);
    if (hi > lo) run(src + lo, dst + lo, hi - lo);
  }
}

void dt_round_bf16_array(const float *src, float *dst, size_t n) {
  round_split(round_bf16_run, src, dst, n);
}

void dt_round_fp16_array(const float *src, float *dst, size_t n) {
  round_split(round_fp16_run, src, dst, n);
}

void dt_round_array(dt_precision precision, const float *src, float *dst, size_t n) {
  switch (precision) {
  case DT_PRECISION_BF16: dt_round_bf16_array(src, dst, n); break;
  case DT_PRECISION_FP16: dt_round_fp16_array(src, dst, n); break;
  case DT_PRECISION_FP32:
    if (dst != src) memcpy(dst, src, n * sizeof *dst);
    break;
  }
}

static const char *const dt_precision_names[] = {
    [DT_PRECISION_FP32] = "fp32", [DT_PRECISION_BF16] = "bf16", [DT_PRECISION_FP16] = "fp16"};

const char *dt_precision_name(dt_precision precision) {
  if ((unsigned)precision >= DT_ARRAY_LEN(dt_precision_names)) return "?";
  return dt_precision_names[precision];
}

bool dt_precision_parse(const char *s, dt_precision *out) {
  for (unsigned i = 0; i < DT_ARRAY_LEN(dt_precision_names); i++)
    if (s && strcmp(s, dt_precision_names[i]) == 0) {
      *out = (dt_precision)i;
      return true;
    }
  return false;
}

dt_precision dt_precision_of(dt_train_precision p) {
  switch (p) {
    case DT_TRAIN_PRECISION_FP32: return DT_PRECISION_FP32;
    case DT_TRAIN_PRECISION_BF16: return DT_PRECISION_BF16;
    case DT_TRAIN_PRECISION_FP16: return DT_PRECISION_FP16;
  }
  DT_FATAL("train.precision %d outside its enum", (int)p);
}
