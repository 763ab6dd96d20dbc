// Registers the C++ kernels as the CPU implementations of the segment-attention operators
// (gat_pyg::segment_attention_fwd / _bwd, additive scores; segment_attention_v2_fwd / _bwd,
// vector scores). Their schemas, fake kernels and autograd formulas are defined in Python
// (gat_pyg/ops/_library.py), for every device.
#include <torch/library.h>

#include "segment_attention.h"

TORCH_LIBRARY_IMPL(gat_pyg, CPU, m) {
  m.impl("segment_attention_fwd", &gat_pyg::segment_attention_forward);
  m.impl("segment_attention_bwd", &gat_pyg::segment_attention_backward);
  m.impl("segment_attention_v2_fwd", &gat_pyg::segment_attention_v2_forward);
  m.impl("segment_attention_v2_bwd", &gat_pyg::segment_attention_v2_backward);
}
