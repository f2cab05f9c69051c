/* blocks.h: the residual-block pieces that several families share, each with one home:
 * the projection shortcut and the pre-activation block of resnet_preact and
 * se_resnet_preact. Parameter names follow the reference implementations' state_dict keys
 * (docs/reference-experiments.md "Models"); each family keeps its own graph order. */
#ifndef DT_MODELS_BLOCKS_H
#define DT_MODELS_BLOCKS_H

#include <stdbool.h>

#include "nn/graph.h"

/* The projection shortcut of a block: conv1x1 with stride `stride` (`<name>.shortcut.conv`),
 * then, with bn, a BN without ReLU (`<name>.shortcut.bn`). // (N, out_ch, H/s, W/s) */
int dt_block_projection(dt_graph *g, const char *name, int x, int out_ch, int stride, bool bn);

/* The pre-activation block (docs/reference-experiments.md "ResNet-preact"):
 *   basic:      BN1 [ReLU] conv3x3(s) BN2 ReLU conv3x3 [BN3] [SE] + shortcut
 *   bottleneck: BN1 [ReLU] conv1x1 BN2 ReLU conv3x3(s) BN3 ReLU conv1x1 [BN4] [SE] + shortcut
 * The shortcut is the identity, or a projection without BN when the channel count or the
 * resolution changes. With preact the pre-activated input (BN1 with ReLU, even with
 * remove_first_relu) feeds both the branch and the shortcut. No ReLU after the addition.
 * se_reduction > 0 (se_resnet_preact) scales the branch output by a squeeze-and-excitation
 * layer (`<name>.se.fc1`, `.fc2`) before the addition, and builds the projection after the
 * branch (its state_dict order); se_reduction == 0 (resnet_preact) builds the projection
 * first and fuses the addition into the last conv unless the last BN follows it. */
typedef struct {
  bool bottleneck, remove_first_relu, add_last_bn;
  int se_reduction; /* 0: no SE layer */
} dt_preact_block;

int dt_block_preact(dt_graph *g, const char *name, int x, int out_ch, int stride, bool preact,
                    const dt_preact_block *o);

#endif
