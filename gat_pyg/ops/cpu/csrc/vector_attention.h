// What the vector-score (GATv2) kernels share: their input checks, and the score of one edge,
// computed the same way (and so to the same bits) in the forward pass and in both backward
// passes.
//
// Layout: x_l [N_src, H, C] (sources' values), x_r [N_dst, H, C] (targets' terms), att [H, C],
// of one float dtype, att contiguous and x_l, x_r with contiguous rows (any row stride);
// edge_attr [E, D] in the caller's edge order with w_edge [H * C, D] (the edge term is
// w_edge @ edge_attr[e]), or edge_attr [E, H * C] as the edge term itself (no w_edge); lse
// [N_dst, H] in double. The graph is SegmentGraph's CSR and CSC, one index dtype.
//
// For edge k = (j -> i), per head h and channel c (PyG's order of additions):
//   z_k[h, c] = (x_r[i, h, c] + x_l[j, h, c]) + e_k[h, c]
//   s_k[h]    = sum_c att[h, c] LeakyReLU(z_k[h, c])
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "checks.h"
#include "dropout_hash.h"
#include "fast_exp.h"
#include "lanes.h"
#include "segment_attention.h"

namespace gat_pyg {

// The sizes of one vector-score op call, read from its checked inputs.
struct VectorSizes : NodeSizes {
  int64_t D;                             // edge feature width (0 without edge features)
  int64_t xl_row, xr_row;                // row strides of x_l and x_r, in elements
  bool projected;                        // edge_attr goes through w_edge
};

inline VectorSizes check_vector_inputs(const GraphArgs& g, const at::Tensor& x_l,
                                       const at::Tensor& x_r, const at::Tensor& att,
                                       const std::optional<at::Tensor>& edge_attr,
                                       const std::optional<at::Tensor>& w_edge) {
  VectorSizes s;
  static_cast<NodeSizes&>(s) = check_node_values(g, x_l, "x_l");
  // Rows may lie any fixed distance apart (e.g. column blocks of one projection product).
  s.xl_row = check_node_rows(x_l, "x_l", s.dtype, x_l.sizes());
  s.xr_row = check_node_rows(x_r, "x_r", s.dtype, {s.num_dst, s.H, s.C});
  check_float_tensor(att, "att", s.dtype, {s.H, s.C});
  s.D = 0;
  s.projected = w_edge.has_value();
  if (edge_attr) {
    TORCH_CHECK_VALUE(edge_attr->dim() == 2, "segment_attention: 'edge_attr' must be 2-D "
                      "(got shape ", edge_attr->sizes(), ")");
    s.D = edge_attr->size(1);
    check_float_tensor(*edge_attr, "edge_attr", s.dtype, {s.E, s.D});
    if (w_edge) {
      check_float_tensor(*w_edge, "w_edge", s.dtype, {s.H * s.C, s.D});
    } else {
      TORCH_CHECK_VALUE(s.D == s.H * s.C, "segment_attention: without 'w_edge', "
                        "'edge_attr' is the edge term and must have heads * channels = ",
                        s.H * s.C, " columns (got ", s.D, ")");
    }
  } else {
    TORCH_CHECK_VALUE(!w_edge, "segment_attention: 'w_edge' was given without 'edge_attr'");
  }
  return s;
}

// The inputs that every pass reads, and the score of an edge.
template <typename scalar_t, typename index_t>
struct VectorInputs {
  using acc_t = typename AccType<scalar_t>::type;
  const index_t* ptr;
  const index_t* src;
  const index_t* perm;
  const scalar_t* x_l;
  const scalar_t* x_r;
  const acc_t* att;         // [H * C]
  const scalar_t* edge_attr;  // may be null
  const acc_t* w_t;         // w_edge transposed, [D, H * C]; null: edge_attr is the term
  int64_t num_src, num_dst, num_edges, H, C, D;
  int64_t xl_row, xr_row;   // row strides of x_l and x_r
  acc_t slope;
  dropout::Params drop;
  IndexErrorFlag* bad;

  bool has_edge() const { return edge_attr != nullptr; }

  // e = the edge term of caller edge eid, [H * C]; a projection is summed in double (into
  // the scratch sum, [H * C]): its D terms would otherwise lose several times the precision
  // of a float32 matrix product.
  GAT_PYG_INLINE void edge_term(int64_t eid, acc_t* __restrict__ e, double* __restrict__ sum,
                                int64_t HC) const {
    const scalar_t* __restrict__ f = edge_attr + eid * D;
    const acc_t* __restrict__ wt = w_t;
    if (!wt) {
#pragma omp simd
      for (int64_t x = 0; x < HC; ++x) e[x] = static_cast<acc_t>(f[x]);
      return;
    }
    for (int64_t x = 0; x < HC; ++x) sum[x] = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const double fd = static_cast<double>(f[d]);
      const acc_t* __restrict__ w = wt + d * HC;
#pragma omp simd
      for (int64_t x = 0; x < HC; ++x) sum[x] += static_cast<double>(w[x]) * fd;
    }
#pragma omp simd
    for (int64_t x = 0; x < HC; ++x) e[x] = static_cast<acc_t>(sum[x]);
  }

  // z = (x_r_i + x_l_j) [+ e] and the per-head scores s [H], summed in the accumulation
  // dtype and kept in double (the softmax then works on them without rounding them). Heads
  // of at most one vector of channels are summed a group of heads at once (lane_sums);
  // wider ones one head at a time.
  GAT_PYG_INLINE void scores(const scalar_t* __restrict__ xr, const scalar_t* __restrict__ xl,
                             const acc_t* __restrict__ e, acc_t* __restrict__ z,
                             double* __restrict__ s, int64_t C) const {
    using V = Lanes<acc_t>;
    constexpr int64_t L = kLanes<acc_t>;
    const acc_t sl = slope;
    const acc_t* __restrict__ at = att;
    if (C <= L) {
      for (int64_t g = 0; g * L < H; ++g) {
        const int64_t n = heads_in_group<acc_t>(H, g);
        V dots[L] = {};
        for (int64_t l = 0; l < n; ++l) {
          const int64_t o = (g * L + l) * C;
          V v = load_lanes<acc_t>(xr + o, C) + load_lanes<acc_t>(xl + o, C);
          if (e) v = v + load_lanes<acc_t>(e + o, C);
          store_lanes<acc_t>(z + o, v, C);
          dots[l] = load_lanes<acc_t>(at + o, C) * leaky_relu(v, sl);
        }
        const V sums = lane_sums<acc_t, L>(dots, n);
        for (int64_t l = 0; l < n; ++l) s[g * L + l] = static_cast<double>(sums[l]);
      }
      return;
    }
    for (int64_t x = 0; x < H; ++x) {
      const int64_t o = x * C;
      acc_t dot = acc_t(0);
      if (e) {
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; ++c) {
          const acc_t v = (static_cast<acc_t>(xr[o + c]) + static_cast<acc_t>(xl[o + c])) +
                          e[o + c];
          z[o + c] = v;
          dot += at[o + c] * (v > acc_t(0) ? v : v * sl);
        }
      } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; ++c) {
          const acc_t v = static_cast<acc_t>(xr[o + c]) + static_cast<acc_t>(xl[o + c]);
          z[o + c] = v;
          dot += at[o + c] * (v > acc_t(0) ? v : v * sl);
        }
      }
      s[x] = static_cast<double>(dot);
    }
  }

  // out = exp(s - t) per head: the difference in double, the exp vectorised over the heads
  // in the accumulation dtype (float's within 1.4 ulp; double's libm exp).
  GAT_PYG_INLINE void exp_heads(const double* __restrict__ s, const double* __restrict__ t,
                                double* __restrict__ out) const {
    constexpr int64_t L = kLanes<acc_t>;
    for (int64_t g = 0; g * L < H; ++g) {
      const int64_t n = heads_in_group<acc_t>(H, g);
      Lanes<acc_t> d = broadcast<acc_t>(acc_t(0));
      for (int64_t l = 0; l < n; ++l) d[l] = static_cast<acc_t>(s[g * L + l] - t[g * L + l]);
      const Lanes<acc_t> v = exp_lanes(d);
      for (int64_t l = 0; l < n; ++l) out[g * L + l] = static_cast<double>(v[l]);
    }
  }
};

// att and w_edge in the accumulation dtype (w_edge transposed to [D, H * C], so that the
// edge term is a sum of contiguous rows); they are small (H * C * (D + 1) values).
template <typename acc_t, typename scalar_t>
inline std::vector<acc_t> to_acc(const at::Tensor& t, bool transpose) {
  const at::Tensor c = (transpose ? t.t() : t).contiguous();
  const scalar_t* p = c.data_ptr<scalar_t>();
  std::vector<acc_t> v(c.numel());
  for (int64_t x = 0; x < c.numel(); ++x) v[x] = static_cast<acc_t>(p[x]);
  return v;
}

}  // namespace gat_pyg
