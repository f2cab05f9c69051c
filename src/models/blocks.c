/* blocks.c: the residual-block pieces several families share (blocks.h). */
#include "models/blocks.h"

#include <stdio.h>

int dt_block_projection(dt_graph *g, const char *name, int x, int out_ch, int stride, bool bn) {
  char nm[160];
  snprintf(nm, sizeof nm, "%s.shortcut.conv", name);
  int y = dt_graph_conv(g, nm, x, out_ch, 1, stride, 0, 1, -1);
  if (bn) {
    snprintf(nm, sizeof nm, "%s.shortcut.bn", name);
    y = dt_graph_bn(g, nm, y, false);
  }
  return y;
}

/* y * sigmoid(fc2(relu(fc1(gap(y))))) // (N, C, H, W) */
static int se_layer(dt_graph *g, const char *name, int y, int reduction) {
  char nm[160];
  int c = dt_graph_shape(g, y).c;
  int s = dt_graph_gap(g, y); /* (N, C, 1, 1) */
  snprintf(nm, sizeof nm, "%s.se.fc1", name);
  s = dt_graph_relu(g, dt_graph_linear(g, nm, s, c / reduction));
  snprintf(nm, sizeof nm, "%s.se.fc2", name);
  s = dt_graph_sigmoid(g, dt_graph_linear(g, nm, s, c));
  return dt_graph_scale(g, y, s);
}

int dt_block_preact(dt_graph *g, const char *name, int x, int out_ch, int stride, bool preact,
                    const dt_preact_block *o) {
  char nm[160];
  dt_shape s = dt_graph_shape(g, x);
  bool se = o->se_reduction > 0;
  int shortcut_in = x, branch;
  snprintf(nm, sizeof nm, "%s.bn1", name);
  if (preact) {
    branch = dt_graph_bn(g, nm, x, true); /* the ReLU stays even with remove_first_relu */
    shortcut_in = branch;
  } else {
    branch = dt_graph_bn(g, nm, x, !o->remove_first_relu);
  }
  bool project = s.c != out_ch || stride != 1;
  int shortcut = shortcut_in;
  if (project && !se) shortcut = dt_block_projection(g, name, shortcut_in, out_ch, stride, false);
  int n_convs = o->bottleneck ? 3 : 2;
  int width = o->bottleneck ? out_ch / 4 : out_ch;
  for (int i = 1; i <= n_convs; i++) {
    bool last = i == n_convs;
    int ksize = o->bottleneck && i != 2 ? 1 : 3;
    /* the stride sits on the first conv of a basic block, on the 3x3 of a bottleneck */
    int conv_stride = (o->bottleneck ? i == 2 : i == 1) ? stride : 1;
    /* Fuse the residual addition into the last conv unless a BN or the SE layer follows. */
    int residual = last && !o->add_last_bn && !se ? shortcut : -1;
    snprintf(nm, sizeof nm, "%s.conv%d", name, i);
    branch = dt_graph_conv(g, nm, branch, last ? out_ch : width, ksize, conv_stride, ksize / 2,
                           1, residual);
    if (!last || o->add_last_bn) {
      snprintf(nm, sizeof nm, "%s.bn%d", name, i + 1);
      branch = dt_graph_bn(g, nm, branch, !last);
    }
  }
  if (se) {
    branch = se_layer(g, name, branch, o->se_reduction);
    if (project) shortcut = dt_block_projection(g, name, shortcut_in, out_ch, stride, false);
  }
  if (se || o->add_last_bn) branch = dt_graph_add(g, branch, shortcut);
  return branch;
}
