// Backward kernel of fused segment attention (CPU, OpenMP, no atomics).
//
// With alpha_k = exp(s_k - lse_i) recomputed from the saved log-sum-exp, the dropout
// factor m_k s (= 0 or 1/(1-p)) re-evaluated from the hash, f_k = LeakyReLU'(raw score_k),
// g_i = dL/dout_i and q_k = dL/dalpha_out_k (if alpha was returned):
//   dL/dalpha_k = m_k s (g_i . h_j + q_k)
//   D_i         = sum_k alpha_k dL/dalpha_k = g_i . out_i + sum_k m_k s alpha_k q_k
//   de_k        = f_k alpha_k (dL/dalpha_k - D_i)                         (d score_k)
//   grad h_j     = sum_{k: src[k]=j} m_k s alpha_k g_i
//   grad a_src_j = sum_{k: src[k]=j} de_k
//   grad a_dst_i = sum_{k in i} de_k
//                = g_i . out_slope_i + sum_k f_k m_k s alpha_k q_k - D_i slope_sum_i
//   grad a_edge[perm[k]] = de_k
// where out_slope_i = sum_k f_k m_k s alpha_k h_j and slope_sum_i = sum_k f_k alpha_k come
// from the forward pass, so that the target-side sum needs no per-edge quantity (no E x H
// buffer of de_k, no second pass over the edges).
//
// Pass 1 (targets, rows in order): D_i (in double) and grad a_dst_i, and per-target rows
//   (a_dst, lse in head lanes) gathered by pass 2.
// Pass 2 (sources, CSC): grad h, and de_k per edge (the dot g_i . h_j, h_j being the source's
//   own row) for grad a_src and, when wanted, grad a_edge. de_k is formed in double (both
//   dots and the difference): it cancels, and float32 sums of it drifted several times past
//   PyG's error; in double a target's only edge gets de_k = 0 exactly, as in PyG.
// Every output row is reduced by one thread in a fixed order, so results are bitwise identical
// for any number of threads. Temporaries: per target 2H floats and H doubles, and one H x C
// row per thread; nothing of size E x C (or E x H).
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
struct BackwardArgs {
  using acc_t = typename AccType<scalar_t>::type;
  const scalar_t* grad_out;
  const scalar_t* grad_alpha;  // caller order; may be null
  const index_t* ptr;
  const index_t* src;
  const index_t* perm;
  const index_t* src_ptr;
  const index_t* csc_dst;
  const index_t* csc_slot;
  const scalar_t* h;
  const scalar_t* a_src;
  const scalar_t* a_dst;   // may be null
  const scalar_t* a_edge;  // may be null
  const scalar_t* out;
  const acc_t* lse;
  const scalar_t* out_slope;  // needed iff grad_a_dst
  const acc_t* slope_sum;     // needed iff grad_a_dst
  acc_t* target_rows;         // [N_dst, 2, G lanes]: a_dst, lse
  double* target_d;           // [N_dst, H]: D
  scalar_t* grad_h;       // may be null
  scalar_t* grad_a_src;   // may be null
  scalar_t* grad_a_dst;   // may be null
  scalar_t* grad_a_edge;  // may be null
  int64_t num_src, num_dst, num_edges, H, C;
  int64_t h_row, a_src_row, a_dst_row;  // row strides (elements) of h, a_src and a_dst
  acc_t slope;
  dropout::Params drop;
  IndexErrorFlag* bad;

  bool need_scores() const { return grad_a_src || grad_a_dst || grad_a_edge; }
  bool need_eid() const { return a_edge || drop.active || grad_alpha || grad_a_edge; }
};

enum Row { kRowDst = 0, kRowLse = 1, kRows = 2 };

// Pass 1: one target per call.
template <typename scalar_t, typename index_t, int CT>
struct TargetWorker {
  using acc_t = typename AccType<scalar_t>::type;
  using V = Lanes<acc_t>;
  static constexpr int64_t L = kLanes<acc_t>;
  const BackwardArgs<scalar_t, index_t>& a;
  const int64_t G;
  std::vector<V> q_terms;  // sum_k m s alpha_k q_k and sum_k f_k m s alpha_k q_k (2 x G)
  std::vector<double> dots;  // H

  explicit TargetWorker(const BackwardArgs<scalar_t, index_t>& args)
      : a(args), G(lane_groups<acc_t>(args.H)), q_terms(2 * G), dots(args.H) {}

  // Per head: sum_c u[x, c] v[x, c], in double like pass 2's g_i . h_j (so that de_k is
  // exactly 0 where it should be, e.g. for a target's only edge, whose out_i is h_j).
  GAT_PYG_INLINE void head_dots(const scalar_t* __restrict__ u, const scalar_t* __restrict__ v,
                                double* __restrict__ dots, int64_t C) const {
    for (int64_t x = 0; x < a.H; ++x) {
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c)
        dot += static_cast<double>(u[x * C + c]) * static_cast<double>(v[x * C + c]);
      dots[x] = dot;
    }
  }

  // The q terms over the target's edges (only when the returned alpha has a gradient).
  bool sum_q_terms(int64_t i, const V* __restrict__ row) {
    const int64_t H = a.H;
    V* __restrict__ qa = q_terms.data();
    V* __restrict__ qf = qa + G;
    for (int64_t g = 0; g < G; ++g) qa[g] = qf[g] = V{};
    const int64_t b = a.ptr[i], e = a.ptr[i + 1];
    if (b < 0 || e < b || e > a.num_edges) {
      a.bad->set("ptr", i + 1, e, b < 0 ? 0 : b, a.num_edges + 1);
      return false;
    }
    for (int64_t k = b; k < e; ++k) {
      const int64_t j = a.src[k];
      const int64_t eid = a.perm[k];
      if (j < 0 || j >= a.num_src) {
        a.bad->set("src", k, j, 0, a.num_src);
        return false;
      }
      if (eid < 0 || eid >= a.num_edges) {
        a.bad->set("perm", k, eid, 0, a.num_edges);
        return false;
      }
      for (int64_t g = 0; g < G; ++g) {
        const int64_t n = heads_in_group<acc_t>(H, g);
        V raw = load_lanes<acc_t>(a.a_src + j * a.a_src_row + g * L, n) + row[kRowDst * G + g];
        if (a.a_edge) raw = raw + load_lanes<acc_t>(a.a_edge + eid * H + g * L, n);
        V w = exp_lanes(leaky_relu<acc_t>(raw, a.slope) - row[kRowLse * G + g]);
        if (a.drop.active)
          for (int64_t l = 0; l < n; ++l)
            w[l] = w[l] * a.drop.template factor<acc_t>(eid, H, g * L + l);
        const V wq = w * load_lanes<acc_t>(a.grad_alpha + eid * H + g * L, n);
        qa[g] += wq;
        qf[g] += leaky_relu_grad<acc_t>(wq, raw, a.slope);
      }
    }
    return true;
  }

  void operator()(int64_t i) {
    const int64_t H = a.H;
    const int64_t C = CT > 0 ? CT : a.C;
    const int64_t HC = H * C;
    V* __restrict__ row = reinterpret_cast<V*>(a.target_rows) + i * kRows * G;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t n = heads_in_group<acc_t>(H, g), off = i * H + g * L;
      row[kRowDst * G + g] =
          a.a_dst ? load_lanes<acc_t>(a.a_dst + i * a.a_dst_row + g * L, n) : V{};
      row[kRowLse * G + g] = load_lanes<acc_t>(a.lse + off, n);
    }
    double* __restrict__ D = a.target_d + i * H;
    for (int64_t x = 0; x < H; ++x) D[x] = 0.0;
    if (!a.need_scores()) return;
    const scalar_t* __restrict__ g_i = a.grad_out + i * HC;
    head_dots(g_i, a.out + i * HC, D, C);
    const bool with_q = a.grad_alpha != nullptr;
    if (with_q && !sum_q_terms(i, row)) return;
    const acc_t* __restrict__ qa = reinterpret_cast<const acc_t*>(q_terms.data());
    const acc_t* __restrict__ qf = reinterpret_cast<const acc_t*>(q_terms.data() + G);
    if (with_q)
      for (int64_t x = 0; x < H; ++x) D[x] += static_cast<double>(qa[x]);
    if (!a.grad_a_dst) return;
    // grad a_dst_i = g_i . out_slope_i + sum_k f m s alpha q - D_i slope_sum_i
    double* __restrict__ d = dots.data();
    head_dots(g_i, a.out_slope + i * HC, d, C);
    for (int64_t x = 0; x < H; ++x) {
      double v = d[x] - D[x] * static_cast<double>(a.slope_sum[i * H + x]);
      if (with_q) v += static_cast<double>(qf[x]);
      a.grad_a_dst[i * H + x] = static_cast<scalar_t>(v);
    }
  }
};

// Pass 2: one source per call, over its outgoing edges in CSC order.
template <typename scalar_t, typename index_t, int CT>
struct SourceWorker {
  using acc_t = typename AccType<scalar_t>::type;
  using V = Lanes<acc_t>;
  static constexpr int64_t L = kLanes<acc_t>;
  const BackwardArgs<scalar_t, index_t>& a;
  const int64_t G;
  // Lanes: a_src_j, then per-edge alpha, m, raw score, f alpha (5 x G).
  std::vector<V> lanes;
  std::vector<acc_t> gh;        // grad h_j (H x C); without grad a_edge P_j, then N_j
  std::vector<double> a_src_grad;  // grad a_src_j (H), summed in double

  explicit SourceWorker(const BackwardArgs<scalar_t, index_t>& args)
      : a(args),
        G(lane_groups<acc_t>(args.H)),
        lanes(5 * G),
        gh((args.grad_a_edge ? 1 : 2) * args.H * (CT > 0 ? CT : args.C)),
        a_src_grad(args.H) {}

  GAT_PYG_INLINE void prefetch_ahead(int64_t t, int64_t HC, bool need_eid) const {
    const int64_t row_size = kRows * G * L;
    if (t + kPrefetchRows < a.num_edges) {
      const int64_t ip = a.csc_dst[t + kPrefetchRows];
      if (static_cast<uint64_t>(ip) < static_cast<uint64_t>(a.num_dst)) {
        prefetch_row(a.target_rows + ip * row_size, row_size);
        prefetch_row(a.target_d + ip * a.H, a.H);
        prefetch_row(a.grad_out + ip * HC, HC);
      }
      if (need_eid) {
        const int64_t kp = a.csc_slot[t + kPrefetchRows];
        if (static_cast<uint64_t>(kp) < static_cast<uint64_t>(a.num_edges)) {
          const int64_t ep = a.perm[kp];  // prefetched kPrefetchScores slots ago
          if (static_cast<uint64_t>(ep) < static_cast<uint64_t>(a.num_edges)) {
            if (a.a_edge) prefetch_row(a.a_edge + ep * a.H, a.H);
            if (a.grad_alpha) prefetch_row(a.grad_alpha + ep * a.H, a.H);
            if (a.grad_a_edge) __builtin_prefetch(a.grad_a_edge + ep * a.H, 1, 3);
          }
        }
      }
    }
    if (need_eid && t + kPrefetchScores < a.num_edges) {
      const int64_t kp = a.csc_slot[t + kPrefetchScores];
      if (static_cast<uint64_t>(kp) < static_cast<uint64_t>(a.num_edges))
        prefetch_row(a.perm + kp, 1);
    }
  }

  void operator()(int64_t j) {
    const int64_t H = a.H;
    const int64_t C = CT > 0 ? CT : a.C;
    const int64_t HC = H * C;
    V* __restrict__ as = lanes.data();
    V* __restrict__ alpha = as + G;
    V* __restrict__ m = alpha + G;
    V* __restrict__ raw = m + G;
    V* __restrict__ fa = raw + G;
    double* __restrict__ gs = a_src_grad.data();
    acc_t* __restrict__ ghj = gh.data();
    const bool need_eid = a.need_eid();
    const bool need_de = a.grad_a_src || a.grad_a_edge;
    // Without grad a_edge no per-edge de_k is needed. With w_k = m_k alpha_k, grad h_j =
    // P_j + N_j split by the LeakyReLU derivative (P_j = sum_{k: f_k = 1} w_k g_i, N_j the
    // rest), and
    //   grad a_src_j = sum_k de_k = h_j . P_j + slope h_j . N_j + S_j,
    //   S_j = sum_k f_k alpha_k (m_k q_k - D_i)   (in double),
    // so the per-edge work is one multiply-add per channel and no dot product. The dots are
    // in double with the products exact, so that a target's only edge (alpha = 1, out_i =
    // h_j, D_i = g_i . h_j) contributes exactly 0, as in PyG.
    const bool per_edge_de = a.grad_a_edge != nullptr;
    for (int64_t x = 0; x < static_cast<int64_t>(gh.size()); ++x) ghj[x] = acc_t(0);
    for (int64_t x = 0; x < H; ++x) gs[x] = 0.0;
    for (int64_t g = 0; g < G; ++g) {
      as[g] = load_lanes<acc_t>(a.a_src + j * a.a_src_row + g * L, heads_in_group<acc_t>(H, g));
      m[g] = broadcast<acc_t>(1);
    }
    const int64_t b = a.src_ptr[j], e = a.src_ptr[j + 1];
    if (b < 0 || e < b || e > a.num_edges) {
      a.bad->set("src_ptr", j + 1, e, b < 0 ? 0 : b, a.num_edges + 1);
      return;
    }
    const scalar_t* __restrict__ hj = a.h + j * a.h_row;
    acc_t* __restrict__ ml = reinterpret_cast<acc_t*>(m);
    const acc_t* __restrict__ al = reinterpret_cast<const acc_t*>(alpha);
    for (int64_t t = b; t < e; ++t) {
      prefetch_ahead(t, HC, need_eid);
      const int64_t i = a.csc_dst[t];
      if (i < 0 || i >= a.num_dst) {
        a.bad->set("csc_dst", t, i, 0, a.num_dst);
        return;
      }
      int64_t eid = 0;
      if (need_eid) {
        const int64_t k = a.csc_slot[t];
        if (k < 0 || k >= a.num_edges) {
          a.bad->set("csc_slot", t, k, 0, a.num_edges);
          return;
        }
        eid = a.perm[k];
        if (eid < 0 || eid >= a.num_edges) {
          a.bad->set("perm", k, eid, 0, a.num_edges);
          return;
        }
      }
      const V* __restrict__ row = reinterpret_cast<const V*>(a.target_rows) + i * kRows * G;
      const scalar_t* __restrict__ g_i = a.grad_out + i * HC;

      // alpha_k, recomputed as in the forward pass, and the dropout factors.
      for (int64_t g = 0; g < G; ++g) {
        V r = as[g] + row[kRowDst * G + g];
        if (a.a_edge)
          r = r + load_lanes<acc_t>(a.a_edge + eid * H + g * L, heads_in_group<acc_t>(H, g));
        raw[g] = r;
        alpha[g] = exp_lanes(leaky_relu<acc_t>(r, a.slope) - row[kRowLse * G + g]);
        fa[g] = leaky_relu_grad<acc_t>(alpha[g], r, a.slope);
      }
      if (a.drop.active)
        for (int64_t x = 0; x < H; ++x) ml[x] = a.drop.template factor<acc_t>(eid, H, x);

      if (!need_de) {  // grad h only
        for (int64_t x = 0; x < H; ++x) {
          const acc_t w = al[x] * ml[x];
          acc_t* __restrict__ ghx = ghj + x * C;
          const scalar_t* __restrict__ gx = g_i + x * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) ghx[c] += w * static_cast<acc_t>(gx[c]);
        }
        continue;
      }
      const double* __restrict__ D = a.target_d + i * H;
      const acc_t* __restrict__ rl = reinterpret_cast<const acc_t*>(raw);
      const acc_t* __restrict__ fal = reinterpret_cast<const acc_t*>(fa);
      if (!per_edge_de) {  // S_j, and grad h split into P_j and N_j (branch-free)
        if (a.grad_alpha) {
          const scalar_t* __restrict__ qk = a.grad_alpha + eid * H;
#pragma omp simd
          for (int64_t x = 0; x < H; ++x)
            gs[x] += static_cast<double>(fal[x]) *
                     (static_cast<double>(ml[x]) * static_cast<double>(qk[x]) - D[x]);
        } else {
#pragma omp simd
          for (int64_t x = 0; x < H; ++x) gs[x] -= static_cast<double>(fal[x]) * D[x];
        }
        for (int64_t x = 0; x < H; ++x) {
          const acc_t w = al[x] * ml[x];
          acc_t* __restrict__ part = ghj + static_cast<int64_t>(!(rl[x] > acc_t(0))) * HC + x * C;
          const scalar_t* __restrict__ gx = g_i + x * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) part[c] += w * static_cast<acc_t>(gx[c]);
        }
        continue;
      }
      // de_k = f alpha (m (g_i . h_j + q_k) - D_i), in double: the difference cancels, and
      // float32 sums of it lost several times PyG's precision. grad h alongside.
      for (int64_t x = 0; x < H; ++x) {
        const acc_t w = al[x] * ml[x];
        acc_t* __restrict__ ghx = ghj + x * C;
        const scalar_t* __restrict__ gx = g_i + x * C;
        const scalar_t* __restrict__ hx = hj + x * C;
        double dot = 0.0;
        if (a.grad_h) {
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < C; ++c) {
            const acc_t gv = static_cast<acc_t>(gx[c]);
            ghx[c] += w * gv;
            dot += static_cast<double>(gv) * static_cast<double>(hx[c]);
          }
        } else {
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < C; ++c)
            dot += static_cast<double>(gx[c]) * static_cast<double>(hx[c]);
        }
        if (a.grad_alpha) dot += static_cast<double>(a.grad_alpha[eid * H + x]);
        const double de = static_cast<double>(fal[x]) * (static_cast<double>(ml[x]) * dot - D[x]);
        gs[x] += de;
        if (a.grad_a_edge) a.grad_a_edge[eid * H + x] = static_cast<scalar_t>(de);
      }
    }
    if (need_de && !per_edge_de) {
      for (int64_t x = 0; x < H; ++x) {
        double pos = 0.0, neg = 0.0;
#pragma omp simd reduction(+ : pos, neg)
        for (int64_t c = 0; c < C; ++c) {
          const double hv = static_cast<double>(hj[x * C + c]);
          pos += hv * static_cast<double>(ghj[x * C + c]);
          neg += hv * static_cast<double>(ghj[HC + x * C + c]);
        }
        gs[x] += pos + static_cast<double>(a.slope) * neg;
      }
      for (int64_t x = 0; x < HC; ++x) ghj[x] += ghj[HC + x];
    }
    if (a.grad_h)
      for (int64_t x = 0; x < HC; ++x) a.grad_h[j * HC + x] = static_cast<scalar_t>(ghj[x]);
    if (a.grad_a_src)
      for (int64_t x = 0; x < H; ++x) a.grad_a_src[j * H + x] = static_cast<scalar_t>(gs[x]);
  }
};

template <typename scalar_t, typename index_t, int CT>
void run_backward(const BackwardArgs<scalar_t, index_t>& args) {
  parallel_rows(args.num_dst, 256, [&] { return TargetWorker<scalar_t, index_t, CT>(args); });
  args.bad->raise();
  if (args.grad_h || args.grad_a_src || args.grad_a_edge)
    parallel_rows(args.num_src, 64, [&] { return SourceWorker<scalar_t, index_t, CT>(args); });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_attention_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, const at::Tensor& out, const at::Tensor& lse,
    const at::Tensor& out_slope, const at::Tensor& slope_sum,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    std::array<bool, 4> output_mask) {
  const AttentionSizes sizes = check_attention_inputs(
      {ptr, src, perm, src_ptr, csc_dst, csc_slot}, h, a_src, a_dst, a_edge);
  const auto dtype = sizes.dtype;
  const int64_t num_src = sizes.num_src, num_dst = sizes.num_dst, E = sizes.E, H = sizes.H,
                C = sizes.C;
  check_float_tensor(grad_out, "grad_out", dtype, {num_dst, H, C});
  check_float_tensor(out, "out", dtype, {num_dst, H, C});
  const bool use_grad_alpha = grad_alpha.has_value() && grad_alpha->numel() > 0;
  if (use_grad_alpha) check_float_tensor(*grad_alpha, "grad_alpha", dtype, {E, H});
  check_float_tensor(lse, "lse", acc_dtype(dtype), {num_dst, H});
  check_dropout(dropout, seed);

  const bool need_h = output_mask[0];
  const bool need_src = output_mask[1];
  const bool need_dst = output_mask[2] && a_dst.has_value();
  const bool need_edge = output_mask[3] && a_edge.has_value();
  if (need_dst) {
    TORCH_CHECK_VALUE(out_slope.numel() > 0 || num_dst * H * C == 0,
                      "segment_attention: grad a_dst needs the forward pass's 'out_slope' "
                      "(call the forward op with save_for_a_dst=True)");
    check_float_tensor(out_slope, "out_slope", dtype, {num_dst, H, C});
    check_float_tensor(slope_sum, "slope_sum", acc_dtype(dtype), {num_dst, H});
  }
  auto empty = [&] { return at::empty({0}, h.options()); };
  at::Tensor grad_h = need_h ? at::empty_like(h) : empty();
  at::Tensor grad_a_src = need_src ? at::empty_like(a_src) : empty();
  at::Tensor grad_a_dst = need_dst ? at::empty_like(*a_dst) : empty();
  at::Tensor grad_a_edge = need_edge ? at::empty_like(*a_edge) : empty();
  if (!(need_h || need_src || need_dst || need_edge) || H == 0) {
    if (need_h) grad_h.zero_();
    if (need_src) grad_a_src.zero_();
    if (need_dst) grad_a_dst.zero_();
    if (need_edge) grad_a_edge.zero_();
    return {grad_h, grad_a_src, grad_a_dst, grad_a_edge};
  }
  const auto acc_options = h.options().dtype(acc_dtype(dtype));
  const int64_t padded_heads = acc_dtype(dtype) == at::kDouble
                                   ? lane_groups<double>(H) * kLanes<double>
                                   : lane_groups<float>(H) * kLanes<float>;
  at::Tensor target_rows = at::empty({num_dst, kRows, padded_heads}, acc_options);
  at::Tensor target_d = at::empty({num_dst, H}, h.options().dtype(at::kDouble));
  const dropout::Params drop = dropout::make_params(dropout, read_seed(seed));

  IndexErrorFlag bad;
  GAT_PYG_DISPATCH_FLOATS(dtype, "segment_attention_backward", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    GAT_PYG_DISPATCH_INDEX(ptr.scalar_type(), "segment_attention_backward", [&] {
      check_ptr_ends<index_t>(ptr, "ptr", E);
      check_ptr_ends<index_t>(src_ptr, "src_ptr", E);
      auto out_ptr = [](at::Tensor& t, bool need) {
        return need ? t.data_ptr<scalar_t>() : nullptr;
      };
      BackwardArgs<scalar_t, index_t> args{
          grad_out.data_ptr<scalar_t>(),
          use_grad_alpha ? grad_alpha->data_ptr<scalar_t>() : nullptr,
          ptr.data_ptr<index_t>(), src.data_ptr<index_t>(), perm.data_ptr<index_t>(),
          src_ptr.data_ptr<index_t>(), csc_dst.data_ptr<index_t>(),
          csc_slot.data_ptr<index_t>(), h.data_ptr<scalar_t>(), a_src.data_ptr<scalar_t>(),
          optional_ptr<scalar_t>(a_dst), optional_ptr<scalar_t>(a_edge),
          out.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(),
          need_dst ? out_slope.data_ptr<scalar_t>() : nullptr,
          need_dst ? slope_sum.data_ptr<acc_t>() : nullptr, target_rows.data_ptr<acc_t>(),
          target_d.data_ptr<double>(),
          out_ptr(grad_h, need_h), out_ptr(grad_a_src, need_src),
          out_ptr(grad_a_dst, need_dst), out_ptr(grad_a_edge, need_edge),
          num_src, num_dst, E, H, C, sizes.h_row, sizes.a_src_row, sizes.a_dst_row,
          static_cast<acc_t>(negative_slope), drop, &bad};
      dispatch_channels(args.C, [&](auto channels) {
        run_backward<scalar_t, index_t, decltype(channels)::value>(args);
      });
    });
  });
  bad.raise();
  return {grad_h, grad_a_src, grad_a_dst, grad_a_edge};
}

}  // namespace gat_pyg
