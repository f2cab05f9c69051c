/* backend_live_ops.h: the list of a backend's live ops (created and not yet freed), kept the
 * same way by every backend: destroy frees what the caller has not, and set_precision and
 * algos_import refuse to run once an op exists. A backend's struct dt_op starts with a
 * dt_live_link, so that a link is its op. */
#ifndef DT_BACKEND_LIVE_OPS_H
#define DT_BACKEND_LIVE_OPS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dt_live_link {
  struct dt_live_link *prev, *next;
} dt_live_link;

/* The newest live op first; {NULL}: none. */
typedef struct {
  dt_live_link *head;
} dt_live_ops;

static inline void dt_live_ops_add(dt_live_ops *live, dt_live_link *op) {
  op->prev = NULL;
  op->next = live->head;
  if (live->head) live->head->prev = op;
  live->head = op;
}

static inline void dt_live_ops_remove(dt_live_ops *live, dt_live_link *op) {
  if (op->prev) op->prev->next = op->next;
  else live->head = op->next;
  if (op->next) op->next->prev = op->prev;
  op->prev = op->next = NULL;
}

static inline bool dt_live_ops_any(const dt_live_ops *live) { return live->head != NULL; }

#endif
