/* step_waits.h: training steps of the real trainer (dt_trainer_setup, dt_step_run) behind a
 * backend wrapper that counts the calls that wait for the device on the CUDA backend
 * (src/cuda/cuda_internal.h, "Synchronisation"): to_host and download hand
 * results to the host and always wait; to_device and upload wait unless the caller holds
 * their host memory (hold_host, which the wrapper adds where the backend has none, as on the
 * CPU, whose copies never wait). For tests/test_step_syncs.c (CPU) and
 * tests/gpu/test_gpu_model.c (CUDA). */
#ifndef DT_STEP_WAITS_H
#define DT_STEP_WAITS_H

#include <stdbool.h>

#include "backend.h"
#include "comm/comm.h"

/* What one step asked of the backend. */
typedef struct {
  long to_host, download, to_device, upload;
  long waiting_uploads; /* to_device and upload outside hold_host */
  bool held;            /* hold_host in force (after the step: it must have let go) */
} sw_counts;

/* The calls of a step that wait for the device on CUDA. */
long sw_waits(const sw_counts *c);

#define SW_MAX_STEPS 8

/* What a run of steps saw. */
typedef struct {
  int steps;
  sw_counts count[SW_MAX_STEPS];
  double loss[SW_MAX_STEPS], correct[SW_MAX_STEPS], images[SW_MAX_STEPS];
  bool applied[SW_MAX_STEPS];  /* the verdict applied the update */
  bool unchanged[SW_MAX_STEPS]; /* weights, optimizer state and running statistics as before */
  bool held_after;              /* some step left hold_host in force */
  bool nccl;                    /* the trainer summed through NCCL (dt_step_start_nccl) */
  size_t nccl_allreduces;       /* ... and the NCCL all-reduces its steps enqueued */
} sw_run;

/* Set up the trainer of configs/quickstart.ini with a small ResNet-preact-8 (batch 16) and
 * the assignments `sets` (NULL-terminated; they may change those), and run `steps` steps
 * (<= SW_MAX_STEPS) at lr 0.01 on `device`; overflow_step: the step whose gradients are made
 * infinite (-1: none). Prints a line per step. Returns false (message printed) when the
 * trainer cannot be set up. */
bool sw_run_steps(sw_run *out, const char *what, dt_comm *comm, dt_device device,
                  const char *const *sets, int steps, int overflow_step);

#endif
