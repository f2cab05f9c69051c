/* replay.h: when a step's recorded device work (train.cuda_graphs) may be replayed, and when
 * it must be recorded anew. A recording holds the addresses of every buffer its ops touched,
 * so it is valid only while none of them was freed or moved: the backend counts such events
 * in dt_backend.generation (a bigger evaluation batch that grows a shared staging or operand
 * buffer, an op or tensor freed), and a recording made at another generation is never
 * replayed. Also re-recorded: another graph, another loss gradient factor (loss scale). Free
 * of CUDA headers, so that the logic is tested on the CPU with a fake backend
 * (tests/test_replay.c). */
#ifndef DT_REPLAY_H
#define DT_REPLAY_H

#include "backend.h"

typedef struct {
  void *captured;           /* the recording, or NULL */
  const void *graph;        /* what it was recorded for: the graph, */
  float scale;              /* the loss gradient factor */
  unsigned long generation; /* and the backend's memory generation */
  long warm;                /* passes so far (recording waits for two op-by-op passes) */
  bool off;                 /* recording failed once: op by op from then on */
  long recordings;          /* recordings made, replays run (for tests and messages) */
  long replays;
} dt_replay;

/* One pass of `graph` with loss gradient factor `scale`. Drops a recording that no longer
 * matches (graph, scale or be->generation), records one when none is held and two passes ran
 * op by op (capture_begin, record(ctx), capture_end), then replays it. Returns true when the
 * pass ran from the recording, false when the caller must run it op by op (warm-up, or
 * recording failed). A recording during which the generation changed is dropped unused. */
bool dt_replay_pass(dt_replay *r, dt_backend *be, const void *graph, float scale,
                    void (*record)(void *ctx), void *ctx);

/* Free the recording (if any); r can be reused. */
void dt_replay_free(dt_replay *r, dt_backend *be);

#endif
