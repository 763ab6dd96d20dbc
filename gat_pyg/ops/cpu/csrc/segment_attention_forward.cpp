// Forward kernel of fused segment attention (CPU, OpenMP over targets).
//
// For each target i, over its incoming CSR slots k in [ptr[i], ptr[i+1]):
//   s_k     = LeakyReLU(a_src[src[k]] + a_dst[i] + a_edge[perm[k]])
//   alpha_k = exp(s_k - max_k s_k) / (sum_k exp(s_k - max_k s_k) + 1e-16)     (PyG's softmax)
//   out_i   = sum_k dropout(alpha_k) h[src[k]]
// The scores of one target live in a per-thread scratch of deg x H (in head lanes), so h is
// read once per edge and the softmax arithmetic is PyG's (max first, then exp, sum and
// division), with no rescaling. Rows about to be gathered are prefetched a few slots ahead.
// Saved for backward: the log-sum-exp per (target, head), lse = max + log(denominator), so
// that backward recomputes alpha_k = exp(s_k - lse) with one subtraction and one exp.
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "dropout_hash.h"
#include "fast_exp.h"
#include "lanes.h"
#include "parallel.h"
#include "prefetch.h"
#include "segment_attention.h"

namespace gat_pyg {
namespace {

template <typename scalar_t, typename index_t>
struct ForwardArgs {
  using acc_t = typename AccType<scalar_t>::type;
  const index_t* ptr;
  const index_t* src;
  const index_t* perm;
  const scalar_t* h;
  const scalar_t* a_src;
  const scalar_t* a_dst;   // may be null
  const scalar_t* a_edge;  // may be null
  scalar_t* out;
  acc_t* lse;
  scalar_t* alpha;      // may be null
  scalar_t* out_slope;  // sum_k LeakyReLU'_k dropout(alpha_k) h[src[k]]; may be null
  acc_t* slope_sum;     // sum_k LeakyReLU'_k alpha_k per head; null iff out_slope is
  int64_t num_src, num_dst, num_edges, H, C;
  int64_t h_row, a_src_row, a_dst_row;  // row strides (elements) of h, a_src and a_dst
  acc_t slope;
  dropout::Params drop;
  IndexErrorFlag* bad;
};

// CT > 0: the number of channels C known at compile time.
template <typename scalar_t, typename index_t, int CT>
struct ForwardWorker {
  using acc_t = typename AccType<scalar_t>::type;
  using V = Lanes<acc_t>;
  const ForwardArgs<scalar_t, index_t>& a;
  static constexpr int64_t L = kLanes<acc_t>;
  const int64_t G;        // lane groups
  std::vector<V> score;   // deg x G: scores, then weights, of the current target
  std::vector<V> deriv;   // deg x G: LeakyReLU' of the scores (if out_slope is wanted)
  std::vector<V> stat;    // a_dst, max, sum, slope sum of the current target (4 x G)
  std::vector<acc_t> acc;  // H x C accumulators of out (and out_slope)

  explicit ForwardWorker(const ForwardArgs<scalar_t, index_t>& args)
      : a(args),
        G(lane_groups<acc_t>(args.H)),
        stat(4 * G),
        acc((args.out_slope ? 2 : 1) * args.H * (CT > 0 ? CT : args.C)) {}

  void zero_row(int64_t i) {
    const int64_t H = a.H, HC = H * (CT > 0 ? CT : a.C);
    scalar_t* out_i = a.out + i * HC;
    for (int64_t x = 0; x < HC; ++x) out_i[x] = scalar_t(0);
    for (int64_t x = 0; x < H; ++x) {
      a.lse[i * H + x] = acc_t(0);
    }
    if (a.out_slope) {
      for (int64_t x = 0; x < HC; ++x) a.out_slope[i * HC + x] = scalar_t(0);
      for (int64_t x = 0; x < H; ++x) a.slope_sum[i * H + x] = acc_t(0);
    }
  }

  GAT_PYG_INLINE void prefetch_ahead(int64_t k, int64_t HC) const {
    if (k + kPrefetchRows < a.num_edges) {
      const int64_t jp = a.src[k + kPrefetchRows];
      if (static_cast<uint64_t>(jp) < static_cast<uint64_t>(a.num_src))
        prefetch_row(a.h + jp * a.h_row, HC);
    }
    if (k + kPrefetchScores < a.num_edges) {
      const int64_t jp = a.src[k + kPrefetchScores];
      if (static_cast<uint64_t>(jp) < static_cast<uint64_t>(a.num_src))
        prefetch_row(a.a_src + jp * a.a_src_row, a.H);
      if (a.a_edge) {
        const int64_t ep = a.perm[k + kPrefetchScores];
        if (static_cast<uint64_t>(ep) < static_cast<uint64_t>(a.num_edges))
          prefetch_row(a.a_edge + ep * a.H, a.H);
      }
    }
  }

  void operator()(int64_t i) {
    const int64_t H = a.H;
    const int64_t C = CT > 0 ? CT : a.C;
    const int64_t HC = H * C;
    const int64_t b = a.ptr[i], e = a.ptr[i + 1];
    if (b < 0 || e < b || e > a.num_edges) {
      a.bad->set("ptr", i + 1, e, b < 0 ? 0 : b, a.num_edges + 1);
      zero_row(i);
      return;
    }
    const int64_t d = e - b;
    if (d == 0) {
      zero_row(i);
      return;
    }
    const bool slope_out = a.out_slope != nullptr;
    if (static_cast<int64_t>(score.size()) < d * G) score.resize(d * G);
    if (slope_out && static_cast<int64_t>(deriv.size()) < d * G) deriv.resize(d * G);
    V* __restrict__ s = score.data();
    V* __restrict__ f = deriv.data();
    V* __restrict__ adst = stat.data();
    V* __restrict__ mx = adst + G;
    V* __restrict__ sum = mx + G;
    V* __restrict__ fsum = sum + G;
    for (int64_t g = 0; g < G; ++g) {
      adst[g] = a.a_dst ? load_lanes<acc_t>(a.a_dst + i * a.a_dst_row + g * L,
                                            heads_in_group<acc_t>(H, g))
                        : V{};
      mx[g] = broadcast<acc_t>(-std::numeric_limits<acc_t>::infinity());
      sum[g] = V{};
      fsum[g] = V{};
    }
    const bool need_eid = a.a_edge || a.drop.active || a.alpha;

    // Scores (validating every index before it is used), their LeakyReLU and maximum.
    for (int64_t kk = 0; kk < d; ++kk) {
      const int64_t k = b + kk;
      prefetch_ahead(k, HC);
      const int64_t j = a.src[k];
      if (j < 0 || j >= a.num_src) {
        a.bad->set("src", k, j, 0, a.num_src);
        zero_row(i);
        return;
      }
      int64_t eid = 0;
      if (need_eid) {
        eid = a.perm[k];
        if (eid < 0 || eid >= a.num_edges) {
          a.bad->set("perm", k, eid, 0, a.num_edges);
          zero_row(i);
          return;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        const int64_t n = heads_in_group<acc_t>(H, g);
        V v = load_lanes<acc_t>(a.a_src + j * a.a_src_row + g * L, n) + adst[g];
        if (a.a_edge) v = v + load_lanes<acc_t>(a.a_edge + eid * H + g * L, n);
        if (slope_out) f[kk * G + g] = leaky_relu_grad<acc_t>(broadcast<acc_t>(1), v, a.slope);
        v = leaky_relu<acc_t>(v, a.slope);
        s[kk * G + g] = v;
        mx[g] = max_lanes<acc_t>(v, mx[g]);
      }
    }
    // PyG's softmax: exp(s - max), sum, / (sum + 1e-16).
    for (int64_t kk = 0; kk < d; ++kk)
      for (int64_t g = 0; g < G; ++g) {
        const V ex = exp_lanes(s[kk * G + g] - mx[g]);
        s[kk * G + g] = ex;
        sum[g] += ex;
      }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t n = heads_in_group<acc_t>(H, g);
      sum[g] = sum[g] + static_cast<acc_t>(1e-16);  // the denominator
      V lse = mx[g];
      for (int64_t l = 0; l < n; ++l) lse[l] += std::log(sum[g][l]);
      store_lanes<acc_t>(a.lse + i * H + g * L, lse, n);
    }
    for (int64_t kk = 0; kk < d; ++kk)
      for (int64_t g = 0; g < G; ++g) s[kk * G + g] = s[kk * G + g] / sum[g];
    if (slope_out) {
      for (int64_t kk = 0; kk < d; ++kk)
        for (int64_t g = 0; g < G; ++g) fsum[g] += f[kk * G + g] * s[kk * G + g];
      for (int64_t g = 0; g < G; ++g)
        store_lanes<acc_t>(a.slope_sum + i * H + g * L, fsum[g], heads_in_group<acc_t>(H, g));
    }
    if (a.drop.active || a.alpha) {
      for (int64_t kk = 0; kk < d; ++kk) {
        const int64_t eid = a.perm[b + kk];
        acc_t* w = reinterpret_cast<acc_t*>(s + kk * G);
        if (a.drop.active)
          for (int64_t x = 0; x < H; ++x) w[x] = w[x] * a.drop.template factor<acc_t>(eid, H, x);
        if (a.alpha)
          for (int64_t x = 0; x < H; ++x) a.alpha[eid * H + x] = static_cast<scalar_t>(w[x]);
      }
    }

    // The weighted sum of the sources' values (and the one weighted by LeakyReLU' too).
    acc_t* __restrict__ ac = acc.data();
    for (int64_t x = 0; x < static_cast<int64_t>(acc.size()); ++x) ac[x] = acc_t(0);
    if (!slope_out) {
      for (int64_t kk = 0; kk < d; ++kk) {
        const scalar_t* __restrict__ hj = a.h + static_cast<int64_t>(a.src[b + kk]) * a.h_row;
        const acc_t* __restrict__ w = reinterpret_cast<const acc_t*>(s + kk * G);
        for (int64_t x = 0; x < H; ++x) {
          const acc_t wx = w[x];
          acc_t* __restrict__ acx = ac + x * C;
          const scalar_t* __restrict__ hx = hj + x * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acx[c] += wx * static_cast<acc_t>(hx[c]);
        }
      }
    } else {
      acc_t* __restrict__ ac2 = ac + HC;
      for (int64_t kk = 0; kk < d; ++kk) {
        const scalar_t* __restrict__ hj = a.h + static_cast<int64_t>(a.src[b + kk]) * a.h_row;
        const acc_t* __restrict__ w = reinterpret_cast<const acc_t*>(s + kk * G);
        const acc_t* __restrict__ fk = reinterpret_cast<const acc_t*>(f + kk * G);
        for (int64_t x = 0; x < H; ++x) {
          const acc_t wx = w[x];
          const acc_t wf = wx * fk[x];
          acc_t* __restrict__ acx = ac + x * C;
          acc_t* __restrict__ ac2x = ac2 + x * C;
          const scalar_t* __restrict__ hx = hj + x * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const acc_t hv = static_cast<acc_t>(hx[c]);
            acx[c] += wx * hv;
            ac2x[c] += wf * hv;
          }
        }
      }
      scalar_t* __restrict__ out2_i = a.out_slope + i * HC;
      for (int64_t x = 0; x < HC; ++x) out2_i[x] = static_cast<scalar_t>(ac2[x]);
    }
    scalar_t* __restrict__ out_i = a.out + i * HC;
    for (int64_t x = 0; x < HC; ++x) out_i[x] = static_cast<scalar_t>(ac[x]);
  }
};

template <typename scalar_t, typename index_t, int CT>
void run_forward(const ForwardArgs<scalar_t, index_t>& args) {
  parallel_rows(args.num_dst, 64, [&] { return ForwardWorker<scalar_t, index_t, CT>(args); });
}

}  // namespace

ForwardResult segment_attention_forward(
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_alpha, bool save_for_a_dst) {
  const AttentionSizes sizes = check_attention_inputs(
      {ptr, src, perm, src_ptr, csc_dst, csc_slot}, h, a_src, a_dst, a_edge);
  const auto dtype = sizes.dtype;
  const int64_t num_src = sizes.num_src, num_dst = sizes.num_dst, E = sizes.E, H = sizes.H,
                C = sizes.C;
  check_dropout(dropout, seed);

  const auto acc_options = h.options().dtype(acc_dtype(dtype));
  at::Tensor out = at::empty({num_dst, H, C}, h.options());
  at::Tensor lse = at::empty({num_dst, H}, acc_options);
  at::Tensor alpha = at::empty({return_alpha ? E : 0, H}, h.options());
  // For grad a_dst (see the backward kernel): out and the attention sums weighted by the
  // LeakyReLU derivative.
  const bool slope_out = save_for_a_dst && a_dst.has_value();
  at::Tensor out_slope = at::empty({slope_out ? num_dst : 0, H, C}, h.options());
  at::Tensor slope_sum = at::empty({slope_out ? num_dst : 0, H}, acc_options);
  if (H == 0) return {out, lse, alpha, out_slope, slope_sum};
  const dropout::Params drop = dropout::make_params(dropout, read_seed(seed));

  IndexErrorFlag bad;
  GAT_PYG_DISPATCH_FLOATS(dtype, "segment_attention_forward", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    GAT_PYG_DISPATCH_INDEX(ptr.scalar_type(), "segment_attention_forward", [&] {
      check_ptr_ends<index_t>(ptr, "ptr", E);
      ForwardArgs<scalar_t, index_t> args{
          ptr.data_ptr<index_t>(), src.data_ptr<index_t>(), perm.data_ptr<index_t>(),
          h.data_ptr<scalar_t>(), a_src.data_ptr<scalar_t>(), optional_ptr<scalar_t>(a_dst),
          optional_ptr<scalar_t>(a_edge), out.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(),
          return_alpha ? alpha.data_ptr<scalar_t>() : nullptr,
          slope_out ? out_slope.data_ptr<scalar_t>() : nullptr,
          slope_out ? slope_sum.data_ptr<acc_t>() : nullptr, num_src, num_dst, E, H, C,
          sizes.h_row, sizes.a_src_row, sizes.a_dst_row, static_cast<acc_t>(negative_slope),
          drop, &bad};
      dispatch_channels(args.C, [&](auto channels) {
        run_forward<scalar_t, index_t, decltype(channels)::value>(args);
      });
    });
  });
  bad.raise();
  return {out, lse, alpha, out_slope, slope_sum};
}

}  // namespace gat_pyg
