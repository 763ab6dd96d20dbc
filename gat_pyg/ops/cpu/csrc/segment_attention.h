// Declarations shared by the segment-attention kernels and their registration.
//
// Layout: h [N_src, H, C], a_src [N_src, H], a_dst [N_dst, H], a_edge [E, H] (caller's edge
// order), all contiguous and of one float dtype; the graph is SegmentGraph's CSR (ptr, src,
// perm) and CSC (src_ptr, csc_dst, csc_slot), one index dtype (int64 or int32).
//
// Forward saves, per (target, head), only the softmax statistic lse = max + log(sum + 1e-16)
// (in the accumulation dtype), and, when a_dst needs a gradient, two
// per-target sums weighted by the LeakyReLU derivative (out_slope [N_dst, H, C] and slope_sum
// [N_dst, H]). Backward recomputes the attention from them; nothing of size E x C (or E x H,
// except the a_edge gradient itself) is ever stored.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>
#include <type_traits>

namespace gat_pyg {

// The accumulation type: float for bfloat16 and float, double for double.
template <typename scalar_t> struct AccType { using type = scalar_t; };
template <> struct AccType<c10::BFloat16> { using type = float; };

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kBFloat16 ? at::kFloat : t;
}

// The kernels' dtype dispatch: float32, float64 and bfloat16 values; int64 and int32 indices.
// Defining GAT_PYG_FLOAT_ONLY (a developer option) builds float32 / int64 only, in a third of
// the time.
#ifdef GAT_PYG_FLOAT_ONLY
#define GAT_PYG_DISPATCH_FLOATS(TYPE, NAME, ...) \
  [&] { using scalar_t = float; return (__VA_ARGS__)(); }()
#define GAT_PYG_DISPATCH_INDEX(TYPE, NAME, ...) \
  [&] { using index_t = int64_t; return (__VA_ARGS__)(); }()
#else
#define GAT_PYG_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, TYPE, NAME, __VA_ARGS__)
#define GAT_PYG_DISPATCH_INDEX(TYPE, NAME, ...) AT_DISPATCH_INDEX_TYPES(TYPE, NAME, __VA_ARGS__)
#endif

// Calls run(std::integral_constant<int, CT>{}) with the channel count C as a compile-time
// constant CT for the common sizes, so that the per-channel loops unroll and vectorise;
// other sizes get CT = 0 and loop over the runtime C.
template <typename Run>
void dispatch_channels(int64_t C, const Run& run) {
  switch (C) {
    case 8: return run(std::integral_constant<int, 8>{});
    case 16: return run(std::integral_constant<int, 16>{});
    case 32: return run(std::integral_constant<int, 32>{});
    case 64: return run(std::integral_constant<int, 64>{});
    default: return run(std::integral_constant<int, 0>{});
  }
}

// The data of an optional tensor argument, or nullptr.
template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// (out, lse, alpha, out_slope, slope_sum); the schemas are in gat_pyg/ops/_library.py.
using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

ForwardResult segment_attention_forward(
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_alpha, bool save_for_a_dst);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_attention_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, const at::Tensor& out, const at::Tensor& lse,
    const at::Tensor& out_slope, const at::Tensor& slope_sum,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    std::array<bool, 4> output_mask);

// (out, lse, alpha) of the vector-score (GATv2) forward op.
std::tuple<at::Tensor, at::Tensor, at::Tensor> segment_attention_v2_forward(
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& x_l, const at::Tensor& x_r, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_attr, const std::optional<at::Tensor>& w_edge,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    bool return_alpha);

// (grad x_l, grad x_r, grad att, grad edge_attr, grad w_edge) of the vector-score op.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
segment_attention_v2_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& x_l, const at::Tensor& x_r, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_attr, const std::optional<at::Tensor>& w_edge,
    const at::Tensor& out, const at::Tensor& lse,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    std::array<bool, 5> output_mask);

}  // namespace gat_pyg
