// Registers the fused segment-attention kernels as PyTorch operators:
//   torch.ops.gat_pyg.segment_attention_fwd / segment_attention_bwd.
// Their fake (meta) kernels and the autograd formula connecting them are registered in
// Python, in gat_pyg/ops/fused.py (named below, so that torch imports it when it needs them).
#include <torch/library.h>

#include "segment_attention.h"

TORCH_LIBRARY(gat_pyg, m) {
  m.set_python_module("gat_pyg.ops.fused");
  m.def(
      "segment_attention_fwd(Tensor ptr, Tensor src, Tensor perm, Tensor src_ptr, "
      "Tensor csc_dst, Tensor csc_slot, Tensor h, Tensor a_src, Tensor? a_dst, "
      "Tensor? a_edge, float negative_slope, float dropout, Tensor? seed, "
      "bool return_alpha, bool save_for_a_dst) -> (Tensor out, Tensor lse, Tensor alpha, "
      "Tensor out_slope, Tensor slope_sum)");
  m.def(
      "segment_attention_bwd(Tensor grad_out, Tensor? grad_alpha, Tensor ptr, Tensor src, "
      "Tensor perm, Tensor src_ptr, Tensor csc_dst, Tensor csc_slot, Tensor h, "
      "Tensor a_src, Tensor? a_dst, Tensor? a_edge, Tensor out, Tensor lse, "
      "Tensor out_slope, Tensor slope_sum, "
      "float negative_slope, float dropout, Tensor? seed, bool[4] output_mask) -> "
      "(Tensor grad_h, Tensor grad_a_src, Tensor grad_a_dst, Tensor grad_a_edge)");
}

TORCH_LIBRARY_IMPL(gat_pyg, CPU, m) {
  m.impl("segment_attention_fwd", &gat_pyg::segment_attention_forward);
  m.impl("segment_attention_bwd", &gat_pyg::segment_attention_backward);
}
