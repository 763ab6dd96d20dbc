// Input validation of the segment-attention ops, run at the op entry before any pointer
// arithmetic: devices, dtypes, ranks, shapes and contiguity here; index *values* are checked
// inside the kernels' loops (each index is range-checked before it is dereferenced) through
// an IndexErrorFlag, which raises IndexError once the parallel region has ended.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

namespace gat_pyg {

// The graph part of the op inputs (see gat_pyg.ops.graph.SegmentGraph).
struct GraphArgs {
  const at::Tensor& ptr;
  const at::Tensor& src;
  const at::Tensor& perm;
  const at::Tensor& src_ptr;
  const at::Tensor& csc_dst;
  const at::Tensor& csc_slot;
};

inline void check_index_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "segment_attention: '", name,
                    "' must be a CPU tensor (got ", t.device(), ")");
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "segment_attention: all graph index tensors must "
                   "share one dtype (int64 or int32); '", name, "' is ", t.scalar_type(),
                   " but 'ptr' is ", dtype);
  TORCH_CHECK_VALUE(t.dim() == 1, "segment_attention: '", name, "' must be 1-D (got shape ",
                    t.sizes(), ")");
  TORCH_CHECK_VALUE(t.is_contiguous(), "segment_attention: '", name, "' must be contiguous");
}

// Checks the graph tensors and returns the number of edges.
inline int64_t check_graph(const GraphArgs& g, int64_t num_src) {
  const auto dtype = g.ptr.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kLong || dtype == at::kInt,
                   "segment_attention: graph index tensors must be int64 or int32 (got ",
                   dtype, ")");
  check_index_tensor(g.ptr, "ptr", dtype);
  check_index_tensor(g.src, "src", dtype);
  check_index_tensor(g.perm, "perm", dtype);
  check_index_tensor(g.src_ptr, "src_ptr", dtype);
  check_index_tensor(g.csc_dst, "csc_dst", dtype);
  check_index_tensor(g.csc_slot, "csc_slot", dtype);
  TORCH_CHECK_VALUE(g.ptr.numel() >= 1, "segment_attention: 'ptr' needs num_dst + 1 >= 1 "
                    "entries");
  const int64_t E = g.src.numel();
  TORCH_CHECK_VALUE(g.perm.numel() == E && g.csc_dst.numel() == E && g.csc_slot.numel() == E,
                    "segment_attention: 'src', 'perm', 'csc_dst' and 'csc_slot' must all have "
                    "num_edges entries (got ", E, ", ", g.perm.numel(), ", ",
                    g.csc_dst.numel(), ", ", g.csc_slot.numel(), ")");
  TORCH_CHECK_VALUE(g.src_ptr.numel() == num_src + 1, "segment_attention: 'src_ptr' must have "
                    "num_src + 1 = ", num_src + 1, " entries (got ", g.src_ptr.numel(), ")");
  return E;
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16;
}

// Checks the device, dtype and shape of a float input.
inline void check_float_layout(const at::Tensor& t, const char* name, at::ScalarType dtype,
                               at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "segment_attention: '", name,
                    "' must be a CPU tensor (got ", t.device(), ")");
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "segment_attention: '", name, "' has dtype ",
                   t.scalar_type(), " but 'h' has ", dtype,
                   "; all float inputs must share one dtype");
  TORCH_CHECK_VALUE(t.sizes() == shape, "segment_attention: '", name, "' must have shape ",
                    shape, " (got ", t.sizes(), ")");
}

// Checks a contiguous float tensor of the given dtype, device and shape.
inline void check_float_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                               at::IntArrayRef shape) {
  check_float_layout(t, name, dtype, shape);
  TORCH_CHECK_VALUE(t.is_contiguous(), "segment_attention: '", name, "' must be contiguous");
}

// Like check_float_tensor, for per-node rows (h, a_src, a_dst): each row must be contiguous
// but rows may lie any fixed distance apart (e.g. column blocks of one projection, [N, F]
// with F >= H * C). Returns that distance (the row stride) in elements.
inline int64_t check_node_rows(const at::Tensor& t, const char* name, at::ScalarType dtype,
                               at::IntArrayRef shape) {
  check_float_layout(t, name, dtype, shape);
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    TORCH_CHECK_VALUE(t.size(d) == 1 || t.stride(d) == expected, "segment_attention: the rows "
                      "of '", name, "' must be contiguous (got strides ", t.strides(), ")");
    expected *= t.size(d);
  }
  TORCH_CHECK_VALUE(t.size(0) <= 1 || t.stride(0) >= 0, "segment_attention: '", name,
                    "' has a negative row stride");
  return t.size(0) <= 1 ? expected : t.stride(0);
}

// The sizes of one op call, read from its checked inputs.
// The sizes that every op reads from its graph and its source values x [num_src, H, C].
struct NodeSizes {
  at::ScalarType dtype;
  int64_t num_src, num_dst, E, H, C;
};

// Checks the graph and the source values (3-D, a supported float dtype) and returns the
// sizes; the caller checks x's layout.
inline NodeSizes check_node_values(const GraphArgs& g, const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 3, "segment_attention: '", name, "' must be [num_src, heads, "
                    "channels] (got shape ", x.sizes(), ")");
  NodeSizes s;
  s.dtype = x.scalar_type();
  TORCH_CHECK_TYPE(is_supported_float(s.dtype), "segment_attention: float32, float64 or "
                   "bfloat16 inputs expected (got ", s.dtype, ")");
  s.num_src = x.size(0);
  s.H = x.size(1);
  s.C = x.size(2);
  s.E = check_graph(g, s.num_src);
  s.num_dst = g.ptr.numel() - 1;
  return s;
}

struct AttentionSizes : NodeSizes {
  int64_t h_row, a_src_row, a_dst_row;  // row strides of h, a_src, a_dst, in elements
};

// Checks the inputs that the forward and backward ops share (the graph, h, a_src, a_dst,
// a_edge) and returns their sizes.
inline AttentionSizes check_attention_inputs(const GraphArgs& g, const at::Tensor& h,
                                             const at::Tensor& a_src,
                                             const std::optional<at::Tensor>& a_dst,
                                             const std::optional<at::Tensor>& a_edge) {
  AttentionSizes s;
  static_cast<NodeSizes&>(s) = check_node_values(g, h, "h");
  s.h_row = check_node_rows(h, "h", s.dtype, h.sizes());
  s.a_src_row = check_node_rows(a_src, "a_src", s.dtype, {s.num_src, s.H});
  s.a_dst_row = a_dst ? check_node_rows(*a_dst, "a_dst", s.dtype, {s.num_dst, s.H}) : s.H;
  if (a_edge) check_float_tensor(*a_edge, "a_edge", s.dtype, {s.E, s.H});
  return s;
}

inline void check_dropout(double p, const std::optional<at::Tensor>& seed) {
  TORCH_CHECK_VALUE(p >= 0.0 && p <= 1.0, "segment_attention: dropout must be in [0, 1] (got ",
                    p, ")");
  if (p > 0.0) {
    TORCH_CHECK_VALUE(seed.has_value(), "segment_attention: dropout > 0 needs a seed");
  }
  if (seed.has_value()) {
    TORCH_CHECK_TYPE(seed->scalar_type() == at::kLong, "segment_attention: 'seed' must be an "
                     "int64 tensor (got ", seed->scalar_type(), ")");
    TORCH_CHECK_VALUE(seed->numel() == 1 && seed->device().is_cpu(), "segment_attention: "
                      "'seed' must be a CPU tensor with one element");
  }
}

inline int64_t read_seed(const std::optional<at::Tensor>& seed) {
  return seed.has_value() ? seed->item<int64_t>() : 0;
}

// Records the first out-of-range index met inside a parallel loop (kernels skip the
// offending row instead of dereferencing it); raise() turns it into a Python IndexError.
class IndexErrorFlag {
 public:
  // Records that `what`[position] == value lies outside [lo, hi).
  inline void set(const char* what, int64_t position, int64_t value, int64_t lo, int64_t hi) {
    int expected = 0;
    if (flag_.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
      what_ = what;
      position_ = position;
      value_ = value;
      lo_ = lo;
      hi_ = hi;
    }
  }
  inline bool is_set() const { return flag_.load(std::memory_order_acquire) != 0; }
  void raise() const {
    if (!is_set()) return;
    TORCH_CHECK_INDEX(false, "segment_attention: invalid graph: ", what_, "[", position_,
                      "] is ", value_, ", outside [", lo_, ", ", hi_, "); build graphs "
                      "with gat_pyg.ops.build_segment_graph");
  }

 private:
  std::atomic<int> flag_{0};
  const char* what_ = "";
  int64_t position_ = 0, value_ = 0, lo_ = 0, hi_ = 0;
};

// Checks ptr[0] == 0 and ptr[n] == total at the op entry (the kernels check that each
// segment [ptr[i], ptr[i + 1]) is non-empty-or-ordered and inside [0, total]).
template <typename index_t>
inline void check_ptr_ends(const at::Tensor& ptr, const char* name, int64_t total) {
  const index_t* p = ptr.data_ptr<index_t>();
  const int64_t n = ptr.numel() - 1;
  TORCH_CHECK_INDEX(static_cast<int64_t>(p[0]) == 0, "segment_attention: invalid graph: ",
                    name, "[0] must be 0 (got ", static_cast<int64_t>(p[0]), ")");
  TORCH_CHECK_INDEX(static_cast<int64_t>(p[n]) == total, "segment_attention: invalid graph: ",
                    name, "[-1] must be the number of edges ", total, " (got ",
                    static_cast<int64_t>(p[n]), ")");
}

}  // namespace gat_pyg
