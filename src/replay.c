/* replay.c: recording and replaying a step's device work (replay.h). */
#include "replay.h"

void dt_replay_free(dt_replay *r, dt_backend *be) {
  if (r->captured) be->ops->capture_free(be, r->captured);
  r->captured = NULL;
}

bool dt_replay_pass(dt_replay *r, dt_backend *be, const void *graph, float scale,
                    void (*record)(void *ctx), void *ctx) {
  if (r->captured &&
      (r->graph != graph || r->scale != scale || r->generation != be->generation))
    dt_replay_free(r, be);
  if (!r->captured && !r->off && r->warm >= 2) {
    const unsigned long before = be->generation;
    be->ops->capture_begin(be);
    record(ctx);
    r->captured = be->ops->capture_end(be);
    r->off = r->captured == NULL;
    /* Memory moved while recording: what was recorded may point at it. */
    if (be->generation != before) dt_replay_free(r, be);
    r->graph = graph;
    r->scale = scale;
    r->generation = be->generation;
    if (r->captured) r->recordings++;
  }
  r->warm++;
  if (!r->captured) return false;
  be->ops->replay(be, r->captured);
  r->replays++;
  return true;
}
