// Backward kernel of vector-score segment attention (GATv2; CPU, OpenMP, no atomics).
//
// Every per-edge quantity is recomputed from the inputs and the saved lse, never stored: for
// edge k = (j -> i) with caller id e, z_k and s_k as in the forward pass, alpha_k =
// exp(s_k - lse_i), m_k the dropout factor, g_i = dL/dout_i and q_e = dL/dalpha_e (if alpha
// was returned), per head:
//   dL/dalpha_k = m_k (g_i . x_l[j] + q_e)
//   G_i         = sum_k alpha_k dL/dalpha_k
//   ds_k        = alpha_k (dL/dalpha_k - G_i)                     (d score_k, in double)
//   dz_k[c]     = ds_k att[c] LeakyReLU'(z_k[c])
//   grad x_r[i] = sum_{k in i} dz_k          grad att = sum_k ds_k LeakyReLU(z_k)
//   grad x_l[j] = sum_{k: src[k] = j} (m_k alpha_k g_i + dz_k)
//   grad e_k    = dz_k:  grad edge_attr[e] = w_edge^T dz_k,  grad w_edge = sum_k dz_k edge_attr[e]^T
//
// Pass 1 (targets, CSR) gives G_i = g_i . out_i from the forward pass's out (in double, as the
// per-edge dL/dalpha_k that ds_k subtracts it from: the rounding of out to the inputs' dtype
// adds no more error than the float reference's own softmax gradient has), plus the q terms
// if alpha has a gradient, and writes it beside a copy of lse_i
// (so that pass 2 reads one row per target, not two); then grad x_r and the per-edge grad
// edge_attr; it sums grad att and grad w_edge per fixed block of targets (the blocks depend
// only on N_dst), and the blocks' sums are added in block order. Pass 2 (sources, CSC)
// gives grad x_l. The per-edge
// arithmetic after the scores is in double: the sums of ds_k cancel, and in float32 they
// lost two to three times the precision of PyG's own float32 backward. Every output is
// reduced by one thread in a fixed order, so the results are bitwise identical for any
// number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "dropout_hash.h"
#include "fast_exp.h"
#include "lanes.h"
#include "parallel.h"
#include "prefetch.h"
#include "segment_attention.h"
#include "vector_attention.h"

namespace gat_pyg {
namespace {

template <typename scalar_t, typename index_t>
struct VectorBackwardArgs {
  using acc_t = typename AccType<scalar_t>::type;
  VectorInputs<scalar_t, index_t> in;
  const index_t* src_ptr;
  const index_t* csc_dst;
  const index_t* csc_slot;
  const scalar_t* grad_out;
  const scalar_t* grad_alpha;  // caller order; may be null
  const scalar_t* out;
  const double* lse;
  double* target_state;    // [N_dst, 2, H]: lse_i, then G_i (one row for pass 2 to read)
  scalar_t* grad_x_l;      // may be null
  scalar_t* grad_x_r;      // may be null
  double* att_blocks;      // [blocks, H * C] or null
  double* w_blocks;        // [blocks, D, H * C] or null
  scalar_t* grad_edge_attr;  // may be null
  int64_t block;           // targets per block of pass 1

  bool per_edge_in_pass1() const {
    return grad_x_r || att_blocks || w_blocks || grad_edge_attr;
  }
};

// What both passes do per edge: recompute z, s, alpha and dL/dalpha, then ds.
template <typename scalar_t, typename index_t, int CT>
struct EdgeGradient {
  using acc_t = typename AccType<scalar_t>::type;
  const VectorBackwardArgs<scalar_t, index_t>& a;
  const VectorInputs<scalar_t, index_t>& in;
  std::vector<acc_t> z, e;
  std::vector<double> s, alpha, w, dl, ds, e_sum;  // w = m alpha, dl = dL/dalpha, per head

  explicit EdgeGradient(const VectorBackwardArgs<scalar_t, index_t>& args)
      : a(args),
        in(args.in),
        z(args.in.H * (CT > 0 ? CT : args.in.C)),
        e(args.in.H * (CT > 0 ? CT : args.in.C)),
        s(args.in.H),
        alpha(args.in.H),
        w(args.in.H),
        dl(args.in.H),
        ds(args.in.H),
        e_sum(args.in.H * (CT > 0 ? CT : args.in.C)) {}

  // For edge (j -> i) with caller id eid: z, s, alpha, w and dl.
  GAT_PYG_INLINE void compute(int64_t i, int64_t j, int64_t eid) {
    const double* __restrict__ lse_i = a.target_state + i * 2 * in.H;
    const int64_t H = in.H;
    const int64_t C = CT > 0 ? CT : in.C;
    const int64_t HC = H * C;
    const scalar_t* __restrict__ xl = in.x_l + j * in.xl_row;
    if (in.has_edge()) in.edge_term(eid, e.data(), e_sum.data(), HC);
    in.scores(in.x_r + i * in.xr_row, xl, in.has_edge() ? e.data() : nullptr, z.data(),
              s.data(), C);
    in.exp_heads(s.data(), lse_i, alpha.data());
    message_dots(a.grad_out + i * HC, xl, dl.data(), C);
    for (int64_t x = 0; x < H; ++x) {
      const double m = in.drop.template factor<double>(eid, H, x);
      w[x] = m * alpha[x];
      const double dot =
          a.grad_alpha ? dl[x] + static_cast<double>(a.grad_alpha[eid * H + x]) : dl[x];
      dl[x] = m * dot;
    }
  }

  // dot[x] = g_i . x_l[j] of head x, in double as G_i (their difference cancels), summed as
  // VectorInputs::scores sums.
  GAT_PYG_INLINE void message_dots(const scalar_t* __restrict__ g_i,
                                   const scalar_t* __restrict__ xl, double* __restrict__ dot,
                                   int64_t C) const {
    using V = Lanes<double>;
    constexpr int64_t L = kLanes<double>;
    if (C <= L) {
      for (int64_t g = 0; g * L < in.H; ++g) {
        const int64_t n = heads_in_group<double>(in.H, g);
        V dots[L] = {};
        for (int64_t l = 0; l < n; ++l) {
          const int64_t o = (g * L + l) * C;
          dots[l] = load_lanes<double>(g_i + o, C) * load_lanes<double>(xl + o, C);
        }
        const V sums = lane_sums<double, L>(dots, n);
        for (int64_t l = 0; l < n; ++l) dot[g * L + l] = sums[l];
      }
      return;
    }
    for (int64_t x = 0; x < in.H; ++x) {
      double d = 0.0;
#pragma omp simd reduction(+ : d)
      for (int64_t c = 0; c < C; ++c)
        d += static_cast<double>(g_i[x * C + c]) * static_cast<double>(xl[x * C + c]);
      dot[x] = d;
    }
  }

  // ds = alpha (dL/dalpha - G_i), after compute().
  GAT_PYG_INLINE void score_grad(const double* __restrict__ G) {
    for (int64_t x = 0; x < in.H; ++x) ds[x] = alpha[x] * (dl[x] - G[x]);
  }

  // dz_k[x, c] = ds att LeakyReLU'(z), into dz.
  GAT_PYG_INLINE void score_gradient(double* __restrict__ dz) const {
    const int64_t C = CT > 0 ? CT : in.C;
    const double slope = static_cast<double>(in.slope);
    const acc_t* __restrict__ at = in.att;
    const acc_t* __restrict__ zk = z.data();
    const double* __restrict__ dsk = ds.data();
    for (int64_t x = 0; x < in.H; ++x) {
      const double d = dsk[x];
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const double t = d * static_cast<double>(at[x * C + c]);
        dz[x * C + c] = zk[x * C + c] > acc_t(0) ? t : t * slope;
      }
    }
  }
};

// Checks slot k of the CSR (its source and, if needed, its caller edge id).
template <typename scalar_t, typename index_t>
GAT_PYG_INLINE bool check_slot(const VectorInputs<scalar_t, index_t>& in, int64_t k,
                               bool need_eid, int64_t* j, int64_t* eid) {
  *j = in.src[k];
  if (*j < 0 || *j >= in.num_src) {
    in.bad->set("src", k, *j, 0, in.num_src);
    return false;
  }
  *eid = 0;
  if (need_eid) {
    *eid = in.perm[k];
    if (*eid < 0 || *eid >= in.num_edges) {
      in.bad->set("perm", k, *eid, 0, in.num_edges);
      return false;
    }
  }
  return true;
}

// Pass 1: one block of targets per call.
template <typename scalar_t, typename index_t, int CT>
struct VectorTargetWorker {
  using acc_t = typename AccType<scalar_t>::type;
  const VectorBackwardArgs<scalar_t, index_t>& a;
  const VectorInputs<scalar_t, index_t>& in;
  EdgeGradient<scalar_t, index_t, CT> edge;
  std::vector<double> dz, gxr;
  std::vector<acc_t> lz;  // LeakyReLU(z) of the current edge

  explicit VectorTargetWorker(const VectorBackwardArgs<scalar_t, index_t>& args)
      : a(args),
        in(args.in),
        edge(args),
        dz(args.in.H * (CT > 0 ? CT : args.in.C)),
        gxr(args.in.H * (CT > 0 ? CT : args.in.C)),
        lz(args.in.H * (CT > 0 ? CT : args.in.C)) {}

  GAT_PYG_INLINE void prefetch_ahead(int64_t k, int64_t HC) const {
    if (k + kPrefetchRows < in.num_edges) {
      const int64_t jp = in.src[k + kPrefetchRows];
      if (static_cast<uint64_t>(jp) < static_cast<uint64_t>(in.num_src))
        prefetch_row(in.x_l + jp * in.xl_row, HC);
      if (in.has_edge() || a.grad_alpha) {
        const int64_t ep = in.perm[k + kPrefetchRows];
        if (static_cast<uint64_t>(ep) < static_cast<uint64_t>(in.num_edges)) {
          if (in.has_edge()) prefetch_row(in.edge_attr + ep * in.D, in.D);
          if (a.grad_alpha) prefetch_row(a.grad_alpha + ep * in.H, in.H);
        }
      }
    }
  }

  void operator()(int64_t blk) {
    const int64_t first = blk * a.block;
    const int64_t last = first + a.block < in.num_dst ? first + a.block : in.num_dst;
    const int64_t HC = in.H * (CT > 0 ? CT : in.C);
    double* att_sum = a.att_blocks ? a.att_blocks + blk * HC : nullptr;
    double* w_sum = a.w_blocks ? a.w_blocks + blk * in.D * HC : nullptr;
    if (att_sum)
      for (int64_t x = 0; x < HC; ++x) att_sum[x] = 0.0;
    if (w_sum)
      for (int64_t x = 0; x < in.D * HC; ++x) w_sum[x] = 0.0;
    for (int64_t i = first; i < last; ++i) target(i, att_sum, w_sum);
  }

  void target(int64_t i, double* __restrict__ att_sum, double* __restrict__ w_sum) {
    const int64_t H = in.H;
    const int64_t C = CT > 0 ? CT : in.C;
    const int64_t HC = H * C;
    double* __restrict__ state = a.target_state + i * 2 * H;
    for (int64_t x = 0; x < H; ++x) state[x] = a.lse[i * H + x];
    double* __restrict__ G = state + H;
    for (int64_t x = 0; x < H; ++x) G[x] = 0.0;
    if (a.grad_x_r)
      for (int64_t x = 0; x < HC; ++x) gxr[x] = 0.0;
    const int64_t b = in.ptr[i], end = in.ptr[i + 1];
    if (b < 0 || end < b || end > in.num_edges) {
      in.bad->set("ptr", i + 1, end, b < 0 ? 0 : b, in.num_edges + 1);
      return;
    }
    const bool need_eid = in.has_edge() || in.drop.active || a.grad_alpha;
    int64_t j, eid;
    // G_i = g_i . out_i (+ sum_k m_k alpha_k q_k), summed in double as each dL/dalpha_k.
    edge.message_dots(a.grad_out + i * HC, a.out + i * HC, G, C);
    if (a.grad_alpha)
      for (int64_t k = b; k < end; ++k) {
        prefetch_ahead(k, HC);
        if (!check_slot(in, k, need_eid, &j, &eid)) return;
        edge.compute(i, j, eid);
        for (int64_t x = 0; x < H; ++x)
          G[x] += edge.w[x] * static_cast<double>(a.grad_alpha[eid * H + x]);
      }
    if (a.per_edge_in_pass1()) {
      for (int64_t k = b; k < end; ++k) {
        prefetch_ahead(k, HC);
        if (!check_slot(in, k, need_eid, &j, &eid)) return;
        edge.compute(i, j, eid);
        edge.score_grad(G);
        edge.score_gradient(dz.data());
        const double* __restrict__ d = dz.data();
        if (a.grad_x_r)
#pragma omp simd
          for (int64_t x = 0; x < HC; ++x) gxr[x] += d[x];
        if (att_sum) {
          const acc_t* __restrict__ zk = edge.z.data();
          acc_t* __restrict__ l = lz.data();
          const acc_t sl = in.slope;
#pragma omp simd
          for (int64_t x = 0; x < HC; ++x) l[x] = zk[x] > acc_t(0) ? zk[x] : zk[x] * sl;
          for (int64_t x = 0; x < H; ++x) {
            const double dsx = edge.ds[x];
            double* __restrict__ sx = att_sum + x * C;
            const acc_t* __restrict__ lx = l + x * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) sx[c] += dsx * static_cast<double>(lx[c]);
          }
        }
        if (!in.has_edge()) continue;
        const scalar_t* __restrict__ f = in.edge_attr + eid * in.D;
        if (a.grad_edge_attr) {
          scalar_t* __restrict__ ge = a.grad_edge_attr + eid * in.D;
          if (!in.w_t) {
            for (int64_t x = 0; x < HC; ++x) ge[x] = static_cast<scalar_t>(d[x]);
          } else {
            for (int64_t dd = 0; dd < in.D; ++dd) {
              const acc_t* __restrict__ wd = in.w_t + dd * HC;
              double dot = 0.0;
#pragma omp simd reduction(+ : dot)
              for (int64_t x = 0; x < HC; ++x)
                dot += static_cast<double>(wd[x]) * d[x];
              ge[dd] = static_cast<scalar_t>(dot);
            }
          }
        }
        if (w_sum)
          for (int64_t dd = 0; dd < in.D; ++dd) {
            const double fd = static_cast<double>(f[dd]);
            double* __restrict__ wd = w_sum + dd * HC;
#pragma omp simd
            for (int64_t x = 0; x < HC; ++x) wd[x] += fd * d[x];
          }
      }
    }
    if (a.grad_x_r)
      for (int64_t x = 0; x < HC; ++x) a.grad_x_r[i * HC + x] = static_cast<scalar_t>(gxr[x]);
  }
};

// Pass 2: one source per call, over its outgoing edges in CSC order.
template <typename scalar_t, typename index_t, int CT>
struct VectorSourceWorker {
  using acc_t = typename AccType<scalar_t>::type;
  const VectorBackwardArgs<scalar_t, index_t>& a;
  const VectorInputs<scalar_t, index_t>& in;
  EdgeGradient<scalar_t, index_t, CT> edge;
  std::vector<double> dz;
  std::vector<acc_t> gxl;

  explicit VectorSourceWorker(const VectorBackwardArgs<scalar_t, index_t>& args)
      : a(args),
        in(args.in),
        edge(args),
        dz(args.in.H * (CT > 0 ? CT : args.in.C)),
        gxl(args.in.H * (CT > 0 ? CT : args.in.C)) {}

  static constexpr int64_t kSourceAhead = 4;
  GAT_PYG_INLINE void prefetch_ahead(int64_t t, int64_t HC, bool need_eid) const {
    if (t + kSourceAhead < in.num_edges) {
      const int64_t ip = a.csc_dst[t + kSourceAhead];
      if (static_cast<uint64_t>(ip) < static_cast<uint64_t>(in.num_dst)) {
        prefetch_row(in.x_r + ip * in.xr_row, HC);
        prefetch_row(a.grad_out + ip * HC, HC);
        prefetch_row(a.target_state + ip * 2 * in.H, 2 * in.H);
      }
      if (need_eid) {
        const int64_t kp = a.csc_slot[t + kSourceAhead];
        if (static_cast<uint64_t>(kp) < static_cast<uint64_t>(in.num_edges)) {
          const int64_t ep = in.perm[kp];  // prefetched kPrefetchScores slots ago
          if (static_cast<uint64_t>(ep) < static_cast<uint64_t>(in.num_edges)) {
            if (in.has_edge()) prefetch_row(in.edge_attr + ep * in.D, in.D);
            if (a.grad_alpha) prefetch_row(a.grad_alpha + ep * in.H, in.H);
          }
        }
      }
    }
    if (need_eid && t + kPrefetchScores < in.num_edges) {
      const int64_t kp = a.csc_slot[t + kPrefetchScores];
      if (static_cast<uint64_t>(kp) < static_cast<uint64_t>(in.num_edges))
        prefetch_row(in.perm + kp, 1);
    }
  }

  void operator()(int64_t j) {
    const int64_t H = in.H;
    const int64_t C = CT > 0 ? CT : in.C;
    const int64_t HC = H * C;
    for (int64_t x = 0; x < HC; ++x) gxl[x] = acc_t(0);
    const int64_t b = a.src_ptr[j], end = a.src_ptr[j + 1];
    const bool need_eid = in.has_edge() || in.drop.active || a.grad_alpha;
    bool ok = !(b < 0 || end < b || end > in.num_edges);
    if (!ok) in.bad->set("src_ptr", j + 1, end, b < 0 ? 0 : b, in.num_edges + 1);
    for (int64_t t = b; ok && t < end; ++t) {
      prefetch_ahead(t, HC, need_eid);
      const int64_t i = a.csc_dst[t];
      if (i < 0 || i >= in.num_dst) {
        in.bad->set("csc_dst", t, i, 0, in.num_dst);
        break;
      }
      const int64_t k = a.csc_slot[t];
      if (k < 0 || k >= in.num_edges) {
        in.bad->set("csc_slot", t, k, 0, in.num_edges);
        break;
      }
      int64_t eid = 0;
      if (need_eid) {
        eid = in.perm[k];
        if (eid < 0 || eid >= in.num_edges) {
          in.bad->set("perm", k, eid, 0, in.num_edges);
          break;
        }
      }
      edge.compute(i, j, eid);
      edge.score_grad(a.target_state + (2 * i + 1) * H);
      edge.score_gradient(dz.data());
      const scalar_t* __restrict__ g_i = a.grad_out + i * HC;
      for (int64_t x = 0; x < H; ++x) {
        const acc_t wx = static_cast<acc_t>(edge.w[x]);
        const double* __restrict__ dzx = dz.data() + x * C;
        acc_t* __restrict__ gx = gxl.data() + x * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          gx[c] += wx * static_cast<acc_t>(g_i[x * C + c]) + static_cast<acc_t>(dzx[c]);
      }
    }
    for (int64_t x = 0; x < HC; ++x) a.grad_x_l[j * HC + x] = static_cast<scalar_t>(gxl[x]);
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
segment_attention_v2_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& x_l, const at::Tensor& x_r, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_attr, const std::optional<at::Tensor>& w_edge,
    const at::Tensor& out, const at::Tensor& lse,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    std::array<bool, 5> output_mask) {
  const VectorSizes sizes = check_vector_inputs(
      {ptr, src, perm, src_ptr, csc_dst, csc_slot}, x_l, x_r, att, edge_attr, w_edge);
  const auto dtype = sizes.dtype;
  const int64_t num_src = sizes.num_src, num_dst = sizes.num_dst, E = sizes.E, H = sizes.H,
                C = sizes.C, D = sizes.D, HC = H * C;
  check_float_tensor(grad_out, "grad_out", dtype, {num_dst, H, C});
  check_float_tensor(out, "out", dtype, {num_dst, H, C});
  const bool use_grad_alpha = grad_alpha.has_value() && grad_alpha->numel() > 0;
  if (use_grad_alpha) check_float_tensor(*grad_alpha, "grad_alpha", dtype, {E, H});
  check_float_tensor(lse, "lse", at::kDouble, {num_dst, H});
  check_dropout(dropout, seed);

  const bool need_l = output_mask[0], need_r = output_mask[1], need_att = output_mask[2];
  const bool need_edge = output_mask[3] && edge_attr.has_value();
  const bool need_w = output_mask[4] && w_edge.has_value();
  auto empty = [&] { return at::empty({0}, x_l.options()); };
  at::Tensor grad_x_l = need_l ? at::empty(x_l.sizes(), x_l.options()) : empty();
  at::Tensor grad_x_r = need_r ? at::empty(x_r.sizes(), x_r.options()) : empty();
  at::Tensor grad_att = need_att ? at::empty_like(att) : empty();
  at::Tensor grad_edge_attr = need_edge ? at::empty_like(*edge_attr) : empty();
  at::Tensor grad_w_edge = need_w ? at::empty_like(*w_edge) : empty();
  if (HC == 0 || !(need_l || need_r || need_att || need_edge || need_w)) {
    for (at::Tensor* t : {&grad_x_l, &grad_x_r, &grad_att, &grad_edge_attr, &grad_w_edge})
      t->zero_();
    return {grad_x_l, grad_x_r, grad_att, grad_edge_attr, grad_w_edge};
  }
  // Blocks of pass 1: at most 256 (their sums of grad att and grad w_edge are kept), at least
  // 16 targets each; a function of N_dst alone.
  const int64_t block = std::max<int64_t>(16, (num_dst + 255) / 256);
  const int64_t blocks = (num_dst + block - 1) / block;
  const auto doubles = x_l.options().dtype(at::kDouble);
  at::Tensor target_state = at::empty({num_dst, 2, H}, doubles);
  at::Tensor att_blocks = at::empty({need_att ? blocks : 0, HC}, doubles);
  at::Tensor w_blocks = at::empty({need_w ? blocks : 0, D, HC}, doubles);
  const dropout::Params drop = dropout::make_params(dropout, read_seed(seed));

  IndexErrorFlag bad;
  GAT_PYG_DISPATCH_FLOATS(dtype, "segment_attention_v2_backward", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const std::vector<acc_t> att_acc = to_acc<acc_t, scalar_t>(att, false);
    const std::vector<acc_t> w_t =
        sizes.projected ? to_acc<acc_t, scalar_t>(*w_edge, true) : std::vector<acc_t>();
    GAT_PYG_DISPATCH_INDEX(ptr.scalar_type(), "segment_attention_v2_backward", [&] {
      check_ptr_ends<index_t>(ptr, "ptr", E);
      check_ptr_ends<index_t>(src_ptr, "src_ptr", E);
      auto out_ptr = [](at::Tensor& t, bool need) {
        return need ? t.data_ptr<scalar_t>() : nullptr;
      };
      VectorBackwardArgs<scalar_t, index_t> args{
          {ptr.data_ptr<index_t>(), src.data_ptr<index_t>(), perm.data_ptr<index_t>(),
           x_l.data_ptr<scalar_t>(), x_r.data_ptr<scalar_t>(), att_acc.data(),
           optional_ptr<scalar_t>(edge_attr), sizes.projected ? w_t.data() : nullptr, num_src,
           num_dst, E, H, C, D, sizes.xl_row, sizes.xr_row, static_cast<acc_t>(negative_slope),
           drop, &bad},
          src_ptr.data_ptr<index_t>(), csc_dst.data_ptr<index_t>(),
          csc_slot.data_ptr<index_t>(), grad_out.data_ptr<scalar_t>(),
          use_grad_alpha ? grad_alpha->data_ptr<scalar_t>() : nullptr,
          out.data_ptr<scalar_t>(),
          lse.data_ptr<double>(), target_state.data_ptr<double>(),
          out_ptr(grad_x_l, need_l), out_ptr(grad_x_r, need_r),
          need_att ? att_blocks.data_ptr<double>() : nullptr,
          need_w ? w_blocks.data_ptr<double>() : nullptr, out_ptr(grad_edge_attr, need_edge),
          block};
      dispatch_channels(C, [&](auto channels) {
        constexpr int CT = decltype(channels)::value;
        parallel_rows(blocks, 1, [&] { return VectorTargetWorker<scalar_t, index_t, CT>(args); });
        bad.raise();
        if (need_l)
          parallel_rows(num_src, 64,
                        [&] { return VectorSourceWorker<scalar_t, index_t, CT>(args); });
      });
    });
    // The blocks' sums, added in block order.
    if (need_att) {
      const double* part = att_blocks.data_ptr<double>();
      scalar_t* g = grad_att.data_ptr<scalar_t>();
      for (int64_t x = 0; x < HC; ++x) {
        double total = 0.0;
        for (int64_t blk = 0; blk < blocks; ++blk) total += part[blk * HC + x];
        g[x] = static_cast<scalar_t>(total);
      }
    }
    if (need_w) {  // w_blocks is [blocks, D, H * C]; grad w_edge is [H * C, D]
      const double* part = w_blocks.data_ptr<double>();
      scalar_t* g = grad_w_edge.data_ptr<scalar_t>();
      for (int64_t x = 0; x < HC; ++x)
        for (int64_t d = 0; d < D; ++d) {
          double total = 0.0;
          for (int64_t blk = 0; blk < blocks; ++blk) total += part[(blk * D + d) * HC + x];
          g[x * D + d] = static_cast<scalar_t>(total);
        }
    }
  });
  bad.raise();
  return {grad_x_l, grad_x_r, grad_att, grad_edge_attr, grad_w_edge};
}

}  // namespace gat_pyg
