/* xent.cu: soft-target cross-entropy of the CUDA backend, one thread per sample, in double
 * like the CPU backend: the logits are few (N K) and the max is subtracted before exp so large
 * logits do not overflow. */
#include "common.cuh"

// z, t (N, K) -> loss (N), dz (N, K), each when not NULL
__global__ static void k_xent(const float *z, const float *t, int n, int k, float scale, float *dz,
                              float *loss) {
  DT_K_FOR(i, (size_t)n) {
    const float *zi = z + i * (size_t)k, *ti = t + i * (size_t)k;
    double zmax = zi[0];
    for (int j = 1; j < k; j++) zmax = fmax(zmax, (double)zi[j]);
    double sum = 0;
    for (int j = 0; j < k; j++) sum += exp((double)zi[j] - zmax);
    const double lse = zmax + log(sum);
    double l = 0;
    for (int j = 0; j < k; j++) l -= (double)ti[j] * ((double)zi[j] - lse);
    if (loss) loss[i] = (float)l;
    if (dz)
      for (int j = 0; j < k; j++)
        dz[i * (size_t)k + j] = (float)((exp((double)zi[j] - lse) - (double)ti[j]) * scale);
  }
}

extern "C" cudaError_t dt_k_xent(const float *z, const float *t, int n, int k, float scale,
                                 float *dz, float *loss, cudaStream_t stream) {
  k_xent<<<dt_k_blocks((size_t)n), DT_K_BLOCK, 0, stream>>>(z, t, n, k, scale, dz, loss);
  return cudaGetLastError();
}
