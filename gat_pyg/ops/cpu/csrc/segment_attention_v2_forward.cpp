// Forward kernel of vector-score segment attention (GATv2; CPU, OpenMP over targets).
//
// For each target i, one pass over its incoming CSR slots k (source j = src[k], caller edge
// e = perm[k]) computes s_k = att . LeakyReLU(x_r[i] + x_l[j] + e_k) (vector_attention.h;
// e_k projected here from edge_attr[e] and w_edge) with an online softmax per head: a
// running maximum m and sum l of exp(s_k - m), and the sum of m_k exp(s_k - m) x_l[j]
// (m_k the dropout factor), rescaled by exp(m_old - m_new) whenever m grows, so that every
// x_l row is read once and nothing per edge and channel is kept. Then
//   out_i = (sum_k m_k exp(s_k - m) x_l[j]) / (l + 1e-16)      (PyG's softmax denominator)
//   lse_i = m + log(l + 1e-16), in double, for backward to recompute alpha_k = exp(s_k - lse)
// The softmax sums are in double, the exps in the accumulation dtype, vectorised over the
// heads (VectorInputs::exp_heads, as in backward). The scores of the current target are kept
// (deg x H per thread) only to return alpha.
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "dropout_hash.h"
#include "parallel.h"
#include "prefetch.h"
#include "segment_attention.h"
#include "vector_attention.h"

namespace gat_pyg {
namespace {

template <typename scalar_t, typename index_t>
struct VectorForwardArgs {
  using acc_t = typename AccType<scalar_t>::type;
  VectorInputs<scalar_t, index_t> in;
  scalar_t* out;
  double* lse;
  scalar_t* alpha;  // may be null
};

template <typename scalar_t, typename index_t, int CT>
struct VectorForwardWorker {
  using acc_t = typename AccType<scalar_t>::type;
  const VectorForwardArgs<scalar_t, index_t>& a;
  const VectorInputs<scalar_t, index_t>& in;
  std::vector<acc_t> z, e;
  // The scores, their softmax sums and the weighted x_l rows, in double. kept: the scores of
  // the target, for alpha.
  std::vector<double> s, mx, old_mx, scale, p, kept, acc, sum, e_sum;

  explicit VectorForwardWorker(const VectorForwardArgs<scalar_t, index_t>& args)
      : a(args),
        in(args.in),
        z(args.in.H * (CT > 0 ? CT : args.in.C)),
        e(args.in.H * (CT > 0 ? CT : args.in.C)),
        acc(args.in.H * (CT > 0 ? CT : args.in.C)),
        s(args.in.H),
        mx(args.in.H),
        old_mx(args.in.H),
        scale(args.in.H),
        p(args.in.H),
        sum(args.in.H),
        e_sum(args.in.H * (CT > 0 ? CT : args.in.C)) {}

  void zero_row(int64_t i, int64_t HC) {
    for (int64_t x = 0; x < HC; ++x) a.out[i * HC + x] = scalar_t(0);
    for (int64_t x = 0; x < in.H; ++x) a.lse[i * in.H + x] = 0.0;
  }

  GAT_PYG_INLINE void prefetch_ahead(int64_t k, int64_t HC) const {
    if (k + kPrefetchRows < in.num_edges) {
      const int64_t jp = in.src[k + kPrefetchRows];
      if (static_cast<uint64_t>(jp) < static_cast<uint64_t>(in.num_src))
        prefetch_row(in.x_l + jp * in.xl_row, HC);
      if (in.has_edge()) {
        const int64_t ep = in.perm[k + kPrefetchRows];
        if (static_cast<uint64_t>(ep) < static_cast<uint64_t>(in.num_edges))
          prefetch_row(in.edge_attr + ep * in.D, in.D);
      }
    }
  }

  void operator()(int64_t i) {
    const int64_t H = in.H;
    const int64_t C = CT > 0 ? CT : in.C;
    const int64_t HC = H * C;
    const int64_t b = in.ptr[i], end = in.ptr[i + 1];
    if (b < 0 || end < b || end > in.num_edges) {
      in.bad->set("ptr", i + 1, end, b < 0 ? 0 : b, in.num_edges + 1);
      zero_row(i, HC);
      return;
    }
    if (end == b) {
      zero_row(i, HC);
      return;
    }
    const bool need_eid = in.has_edge() || in.drop.active || a.alpha;
    if (a.alpha && static_cast<int64_t>(kept.size()) < (end - b) * H) kept.resize((end - b) * H);
    for (int64_t x = 0; x < H; ++x) {
      mx[x] = -std::numeric_limits<double>::infinity();
      sum[x] = 0.0;
    }
    double* __restrict__ ac = acc.data();
    for (int64_t x = 0; x < HC; ++x) ac[x] = 0.0;
    const scalar_t* __restrict__ xr = in.x_r + i * in.xr_row;

    for (int64_t k = b; k < end; ++k) {
      prefetch_ahead(k, HC);
      // Every index is checked before it is used.
      const int64_t j = in.src[k];
      if (j < 0 || j >= in.num_src) {
        in.bad->set("src", k, j, 0, in.num_src);
        zero_row(i, HC);
        return;
      }
      int64_t eid = 0;
      if (need_eid) {
        eid = in.perm[k];
        if (eid < 0 || eid >= in.num_edges) {
          in.bad->set("perm", k, eid, 0, in.num_edges);
          zero_row(i, HC);
          return;
        }
      }
      const scalar_t* __restrict__ xl = in.x_l + j * in.xl_row;
      if (in.has_edge()) in.edge_term(eid, e.data(), e_sum.data(), HC);
      in.scores(xr, xl, in.has_edge() ? e.data() : nullptr, z.data(), s.data(), C);
      if (a.alpha)
        for (int64_t x = 0; x < H; ++x) kept[(k - b) * H + x] = s[x];
      // A new maximum rescales what was summed so far by exp(old - new).
      bool grew = false;
      for (int64_t x = 0; x < H; ++x) {
        const double m = s[x] > mx[x] ? s[x] : mx[x];
        grew |= m != mx[x];
        old_mx[x] = mx[x];
        mx[x] = m;
      }
      if (grew) {
        in.exp_heads(old_mx.data(), mx.data(), scale.data());
        for (int64_t x = 0; x < H; ++x) {
          if (old_mx[x] == mx[x]) continue;
          double* __restrict__ acx = ac + x * C;
          const double f = scale[x];
          sum[x] *= f;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acx[c] *= f;
        }
      }
      in.exp_heads(s.data(), mx.data(), p.data());
      for (int64_t x = 0; x < H; ++x) {
        double* __restrict__ acx = ac + x * C;
        sum[x] += p[x];
        const double w = p[x] * in.drop.template factor<double>(eid, H, x);
        const scalar_t* __restrict__ xlx = xl + x * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) acx[c] += w * static_cast<double>(xlx[c]);
      }
    }
    scalar_t* __restrict__ out_i = a.out + i * HC;
    for (int64_t x = 0; x < H; ++x) {
      const double denominator = sum[x] + 1e-16;
      a.lse[i * H + x] = mx[x] + std::log(denominator);
      for (int64_t c = 0; c < C; ++c)
        out_i[x * C + c] = static_cast<scalar_t>(ac[x * C + c] / denominator);
    }
    if (a.alpha) {
      for (int64_t k = b; k < end; ++k) {
        const int64_t eid = in.perm[k];
        in.exp_heads(kept.data() + (k - b) * H, mx.data(), p.data());
        for (int64_t x = 0; x < H; ++x) {
          const double weight = p[x] / (sum[x] + 1e-16);
          a.alpha[eid * H + x] =
              static_cast<scalar_t>(weight * in.drop.template factor<double>(eid, H, x));
        }
      }
    }
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> segment_attention_v2_forward(
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& x_l, const at::Tensor& x_r, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_attr, const std::optional<at::Tensor>& w_edge,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    bool return_alpha) {
  const VectorSizes sizes = check_vector_inputs(
      {ptr, src, perm, src_ptr, csc_dst, csc_slot}, x_l, x_r, att, edge_attr, w_edge);
  const int64_t num_dst = sizes.num_dst, E = sizes.E, H = sizes.H, C = sizes.C;
  check_dropout(dropout, seed);
  at::Tensor out = at::empty({num_dst, H, C}, x_l.options());
  at::Tensor lse = at::empty({num_dst, H}, x_l.options().dtype(at::kDouble));
  at::Tensor alpha = at::empty({return_alpha ? E : 0, H}, x_l.options());
  if (H == 0 || C == 0) {
    out.zero_();
    lse.zero_();
    alpha.zero_();
    return {out, lse, alpha};
  }
  const dropout::Params drop = dropout::make_params(dropout, read_seed(seed));

  IndexErrorFlag bad;
  GAT_PYG_DISPATCH_FLOATS(sizes.dtype, "segment_attention_v2_forward", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const std::vector<acc_t> att_acc = to_acc<acc_t, scalar_t>(att, false);
    const std::vector<acc_t> w_t =
        sizes.projected ? to_acc<acc_t, scalar_t>(*w_edge, true) : std::vector<acc_t>();
    GAT_PYG_DISPATCH_INDEX(ptr.scalar_type(), "segment_attention_v2_forward", [&] {
      check_ptr_ends<index_t>(ptr, "ptr", E);
      VectorForwardArgs<scalar_t, index_t> args{
          {ptr.data_ptr<index_t>(), src.data_ptr<index_t>(), perm.data_ptr<index_t>(),
           x_l.data_ptr<scalar_t>(), x_r.data_ptr<scalar_t>(), att_acc.data(),
           optional_ptr<scalar_t>(edge_attr), sizes.projected ? w_t.data() : nullptr,
           sizes.num_src, num_dst, E, H, C, sizes.D, sizes.xl_row, sizes.xr_row,
           static_cast<acc_t>(negative_slope), drop,
           &bad},
          out.data_ptr<scalar_t>(), lse.data_ptr<double>(),
          return_alpha ? alpha.data_ptr<scalar_t>() : nullptr};
      dispatch_channels(C, [&](auto channels) {
        constexpr int CT = decltype(channels)::value;
        parallel_rows(num_dst, 64,
                      [&] { return VectorForwardWorker<scalar_t, index_t, CT>(args); });
      });
    });
  });
  bad.raise();
  return {out, lse, alpha};
}

}  // namespace gat_pyg
