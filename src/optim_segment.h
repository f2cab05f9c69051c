/* optim_segment.h: one row of the segment table of backend.h's lars_update_multi, in a header
 * of its own because both sides of the seam read it: the C host code (backend.h) and the CUDA
 * kernels (kernels/optim.cu, compiled as C++, which cannot include backend.h). */
#ifndef DT_OPTIM_SEGMENT_H
#define DT_OPTIM_SEGMENT_H

#include <stdint.h>

/* One trainable tensor of the weight arena: its elements [offset, offset + count) and its
 * weight decay. */
typedef struct dt_optim_segment {
  uint64_t offset, count;
  float wd;
  uint32_t unused; /* zero */
} dt_optim_segment;

#endif
