// Backward kernel of fused segment attention (CPU, OpenMP, no atomics).
//
// With alpha_k recomputed from the saved (max, denominator) per (target, head), the dropout
// factor m_k s (= 0 or 1/(1-p)) re-evaluated from the hash, f_k = LeakyReLU'(raw score_k),
// g_i = dL/dout_i and q_k = dL/dalpha_out_k (if alpha was returned):
//   dL/dalpha_k = m_k s (g_i . h_j + q_k)
//   D_i         = sum_k alpha_k dL/dalpha_k = g_i . out_i + sum_k m_k s alpha_k q_k
//   de_k        = f_k alpha_k (dL/dalpha_k - D_i)                         (d score_k)
//   grad h_j     = sum_{k: src[k]=j} m_k s alpha_k g_i
//   grad a_src_j = sum_{k: src[k]=j} de_k
//                = h_j . (sum_k f_k m_k s alpha_k g_i) + sum_k f_k m_k s alpha_k q_k
//                  - sum_k f_k alpha_k D_i
//   grad a_dst_i = sum_{k in i} de_k
//                = g_i . out_slope_i + sum_k f_k m_k s alpha_k q_k - D_i slope_sum_i
//   grad a_edge[perm[k]] = de_k
// where out_slope_i = sum_k f_k m_k s alpha_k h_j and slope_sum_i = sum_k f_k alpha_k come
// from the forward pass. So no per-edge dot product g_i . h_j is needed unless grad a_edge is.
//
// Pass 1 (targets, rows in order): D_i and grad a_dst_i, and per-target rows (a_dst, max,
//   denominator, D in head lanes) gathered by pass 2.
// Pass 2 (sources, CSC): grad h, grad a_src, and de_k per edge when grad a_edge is wanted.
// Every output row is reduced by one thread in a fixed order, so results are bitwise identical
// for any number of threads. Temporaries: the N_dst x 4H rows and two H x C rows per thread;
// nothing of size E x C (or E x H).
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
  const acc_t* max;
  const acc_t* denom;
  const scalar_t* out_slope;  // needed iff grad_a_dst
  const acc_t* slope_sum;     // needed iff grad_a_dst
  acc_t* target_rows;         // [N_dst, 4, G lanes]: a_dst, max, denominator, D
  scalar_t* grad_h;       // may be null
  scalar_t* grad_a_src;   // may be null
  scalar_t* grad_a_dst;   // may be null
  scalar_t* grad_a_edge;  // may be null
  int64_t num_src, num_dst, num_edges, H, C;
  acc_t slope;
  dropout::Params drop;
  IndexErrorFlag* bad;

  bool need_scores() const { return grad_a_src || grad_a_dst || grad_a_edge; }
  bool need_eid() const { return a_edge || drop.active || grad_alpha || grad_a_edge; }
};

enum Row { kRowDst = 0, kRowMax = 1, kRowDen = 2, kRowD = 3 };

// Pass 1: one target per call.
template <typename scalar_t, typename index_t, int CT>
struct TargetWorker {
  using acc_t = typename AccType<scalar_t>::type;
  using V = Lanes<acc_t>;
  static constexpr int64_t L = kLanes<acc_t>;
  const BackwardArgs<scalar_t, index_t>& a;
  const int64_t G;
  std::vector<V> q_terms;  // sum_k m s alpha_k q_k and sum_k f_k m s alpha_k q_k (2 x G)
  std::vector<acc_t> dots;  // H

  explicit TargetWorker(const BackwardArgs<scalar_t, index_t>& args)
      : a(args), G(lane_groups<acc_t>(args.H)), q_terms(2 * G), dots(G * L) {}

  // Per head: sum_c u[x, c] v[x, c].
  GAT_PYG_INLINE void head_dots(const scalar_t* __restrict__ u, const scalar_t* __restrict__ v,
                                acc_t* __restrict__ dots, int64_t C) const {
    for (int64_t x = 0; x < a.H; ++x) {
      acc_t dot = acc_t(0);
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c)
        dot += static_cast<acc_t>(u[x * C + c]) * static_cast<acc_t>(v[x * C + c]);
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
        V raw = load_lanes<acc_t>(a.a_src + j * H + g * L, n) + row[kRowDst * G + g];
        if (a.a_edge) raw = raw + load_lanes<acc_t>(a.a_edge + eid * H + g * L, n);
        V w = exp_lanes(leaky_relu<acc_t>(raw, a.slope) - row[kRowMax * G + g]) /
              row[kRowDen * G + g];
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
    V* __restrict__ row = reinterpret_cast<V*>(a.target_rows) + i * 4 * G;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t n = heads_in_group<acc_t>(H, g), off = i * H + g * L;
      row[kRowDst * G + g] = a.a_dst ? load_lanes<acc_t>(a.a_dst + off, n) : V{};
      row[kRowMax * G + g] = load_lanes<acc_t>(a.max + off, n);
      row[kRowDen * G + g] = load_lanes<acc_t>(a.denom + off, n, acc_t(1));
      row[kRowD * G + g] = V{};
    }
    if (!a.need_scores()) return;
    const scalar_t* __restrict__ g_i = a.grad_out + i * HC;
    head_dots(g_i, a.out + i * HC, reinterpret_cast<acc_t*>(row + kRowD * G), C);
    const bool with_q = a.grad_alpha != nullptr;
    if (with_q && !sum_q_terms(i, row)) return;
    if (with_q)
      for (int64_t g = 0; g < G; ++g) row[kRowD * G + g] += q_terms[g];
    if (!a.grad_a_dst) return;
    // grad a_dst_i = g_i . out_slope_i + sum_k f m s alpha q - D_i slope_sum_i
    acc_t* __restrict__ d = dots.data();
    head_dots(g_i, a.out_slope + i * HC, d, C);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t n = heads_in_group<acc_t>(H, g);
      V v = load_lanes<acc_t>(d + g * L, n);
      if (with_q) v = v + q_terms[G + g];
      v = v - row[kRowD * G + g] * load_lanes<acc_t>(a.slope_sum + i * H + g * L, n);
      store_lanes<acc_t>(a.grad_a_dst + i * H + g * L, v, n);
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
  // Lanes: a_src_j, then accumulators (q terms, sum f alpha D or sum de), then per-edge
  // alpha, m, raw score, dot (7 x G).
  std::vector<V> lanes;
  // grad h_j and u_j = sum_k f m s alpha_k g_i (2 x H x C).
  std::vector<acc_t> rows;

  explicit SourceWorker(const BackwardArgs<scalar_t, index_t>& args)
      : a(args),
        G(lane_groups<acc_t>(args.H)),
        lanes(7 * G),
        rows(2 * args.H * (CT > 0 ? CT : args.C)) {}

  GAT_PYG_INLINE void prefetch_ahead(int64_t t, int64_t HC, bool need_eid) const {
    const int64_t row_size = 4 * G * L;
    if (t + kPrefetchRows < a.num_edges) {
      const int64_t ip = a.csc_dst[t + kPrefetchRows];
      if (static_cast<uint64_t>(ip) < static_cast<uint64_t>(a.num_dst)) {
        prefetch_row(a.target_rows + ip * row_size, row_size);
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
    V* __restrict__ acc_q = as + G;    // sum_k f m s alpha_k q_k
    V* __restrict__ acc_d = acc_q + G;  // sum_k f alpha_k D_i, or sum_k de_k
    V* __restrict__ alpha = acc_d + G;
    V* __restrict__ m = alpha + G;
    V* __restrict__ raw = m + G;
    V* __restrict__ dot = raw + G;
    acc_t* __restrict__ gh = rows.data();
    acc_t* __restrict__ u = gh + HC;
    const bool need_eid = a.need_eid();
    const bool per_edge = a.grad_a_edge != nullptr;  // de_k per edge (else the u trick)
    const bool need_src = a.grad_a_src != nullptr;
    const bool use_u = need_src && !per_edge;
    for (int64_t x = 0; x < (use_u ? 2 : 1) * HC; ++x) rows[x] = acc_t(0);
    for (int64_t g = 0; g < G; ++g) {
      as[g] = load_lanes<acc_t>(a.a_src + j * H + g * L, heads_in_group<acc_t>(H, g));
      acc_q[g] = acc_d[g] = V{};
      m[g] = broadcast<acc_t>(1);
    }
    const int64_t b = a.src_ptr[j], e = a.src_ptr[j + 1];
    if (b < 0 || e < b || e > a.num_edges) {
      a.bad->set("src_ptr", j + 1, e, b < 0 ? 0 : b, a.num_edges + 1);
      return;
    }
    const scalar_t* __restrict__ hj = a.h + j * HC;
    acc_t* __restrict__ ml = reinterpret_cast<acc_t*>(m);
    const acc_t* __restrict__ al = reinterpret_cast<const acc_t*>(alpha);
    const acc_t* __restrict__ rl = reinterpret_cast<const acc_t*>(raw);
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
      const V* __restrict__ row = reinterpret_cast<const V*>(a.target_rows) + i * 4 * G;
      const scalar_t* __restrict__ g_i = a.grad_out + i * HC;

      // alpha_k, recomputed as in the forward pass, and the dropout factors.
      for (int64_t g = 0; g < G; ++g) {
        V r = as[g] + row[kRowDst * G + g];
        if (a.a_edge)
          r = r + load_lanes<acc_t>(a.a_edge + eid * H + g * L, heads_in_group<acc_t>(H, g));
        raw[g] = r;
        alpha[g] = exp_lanes(leaky_relu<acc_t>(r, a.slope) - row[kRowMax * G + g]) /
                   row[kRowDen * G + g];
      }
      if (a.drop.active)
        for (int64_t x = 0; x < H; ++x) ml[x] = a.drop.template factor<acc_t>(eid, H, x);

      if (!need_src && !per_edge) {  // grad h only
        for (int64_t x = 0; x < H; ++x) {
          const acc_t w = al[x] * ml[x];
          acc_t* __restrict__ ghx = gh + x * C;
          const scalar_t* __restrict__ gx = g_i + x * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) ghx[c] += w * static_cast<acc_t>(gx[c]);
        }
        continue;
      }
      if (use_u) {
        // grad h and u_j in one sweep over g_i; the scalar terms of grad a_src per head.
        for (int64_t x = 0; x < H; ++x) {
          const acc_t w = al[x] * ml[x];
          const acc_t wf = rl[x] > acc_t(0) ? w : w * a.slope;
          acc_t* __restrict__ ghx = gh + x * C;
          acc_t* __restrict__ ux = u + x * C;
          const scalar_t* __restrict__ gx = g_i + x * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const acc_t gv = static_cast<acc_t>(gx[c]);
            ghx[c] += w * gv;
            ux[c] += wf * gv;
          }
        }
        for (int64_t g = 0; g < G; ++g) {
          acc_d[g] += leaky_relu_grad<acc_t>(alpha[g] * row[kRowD * G + g], raw[g], a.slope);
          if (a.grad_alpha) {
            const V q = load_lanes<acc_t>(a.grad_alpha + eid * H + g * L,
                                          heads_in_group<acc_t>(H, g));
            acc_q[g] += leaky_relu_grad<acc_t>(alpha[g] * m[g] * q, raw[g], a.slope);
          }
        }
        continue;
      }
      // Per-edge de_k (grad a_edge wanted): dots g_i . h_j, grad h alongside.
      acc_t* __restrict__ dl = reinterpret_cast<acc_t*>(dot);
      for (int64_t x = 0; x < H; ++x) {
        const acc_t w = al[x] * ml[x];
        acc_t* __restrict__ ghx = gh + x * C;
        const scalar_t* __restrict__ gx = g_i + x * C;
        const scalar_t* __restrict__ hx = hj + x * C;
        acc_t sum = acc_t(0);
        if (a.grad_h) {
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < C; ++c) {
            const acc_t gv = static_cast<acc_t>(gx[c]);
            ghx[c] += w * gv;
            sum += gv * static_cast<acc_t>(hx[c]);
          }
        } else {
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < C; ++c)
            sum += static_cast<acc_t>(gx[c]) * static_cast<acc_t>(hx[c]);
        }
        dl[x] = sum;
      }
      for (int64_t g = 0; g < G; ++g) {
        const int64_t n = heads_in_group<acc_t>(H, g);
        V dg = dot[g];
        if (a.grad_alpha) dg = dg + load_lanes<acc_t>(a.grad_alpha + eid * H + g * L, n);
        const V de = leaky_relu_grad<acc_t>(alpha[g] * (m[g] * dg - row[kRowD * G + g]),
                                            raw[g], a.slope);
        acc_d[g] += de;
        store_lanes<acc_t>(a.grad_a_edge + eid * H + g * L, de, n);
      }
    }
    if (a.grad_h)
      for (int64_t x = 0; x < HC; ++x) a.grad_h[j * HC + x] = static_cast<scalar_t>(gh[x]);
    if (!need_src) return;
    if (use_u) {
      // grad a_src_j = h_j . u_j + sum f m s alpha q - sum f alpha D
      acc_t* __restrict__ dl = reinterpret_cast<acc_t*>(dot);
      for (int64_t x = 0; x < H; ++x) {
        acc_t sum = acc_t(0);
        const acc_t* __restrict__ ux = u + x * C;
        const scalar_t* __restrict__ hx = hj + x * C;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < C; ++c) sum += ux[c] * static_cast<acc_t>(hx[c]);
        dl[x] = sum;
      }
      for (int64_t g = 0; g < G; ++g) acc_d[g] = (dot[g] + acc_q[g]) - acc_d[g];
    }
    for (int64_t g = 0; g < G; ++g)
      store_lanes<acc_t>(a.grad_a_src + j * H + g * L, acc_d[g], heads_in_group<acc_t>(H, g));
  }
};

template <typename scalar_t, typename index_t, int CT>
void run_backward(const BackwardArgs<scalar_t, index_t>& args) {
  parallel_rows(args.num_dst, 256, [&] { return TargetWorker<scalar_t, index_t, CT>(args); });
  args.bad->raise();
  if (args.grad_h || args.grad_a_src || args.grad_a_edge)
    parallel_rows(args.num_src, 64, [&] { return SourceWorker<scalar_t, index_t, CT>(args); });
}

template <typename scalar_t, typename index_t>
void dispatch_backward(const BackwardArgs<scalar_t, index_t>& args) {
  switch (args.C) {
    case 8: return run_backward<scalar_t, index_t, 8>(args);
    case 16: return run_backward<scalar_t, index_t, 16>(args);
    case 32: return run_backward<scalar_t, index_t, 32>(args);
    case 64: return run_backward<scalar_t, index_t, 64>(args);
    default: return run_backward<scalar_t, index_t, 0>(args);
  }
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_attention_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, const at::Tensor& out, const at::Tensor& max,
    const at::Tensor& denom, const at::Tensor& out_slope, const at::Tensor& slope_sum,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    std::array<bool, 4> output_mask) {
  TORCH_CHECK_VALUE(h.dim() == 3, "segment_attention: 'h' must be [num_src, heads, channels] "
                    "(got shape ", h.sizes(), ")");
  const auto dtype = h.scalar_type();
  TORCH_CHECK_TYPE(is_supported_float(dtype), "segment_attention: float32, float64 or "
                   "bfloat16 inputs expected (got ", dtype, ")");
  const int64_t num_src = h.size(0), H = h.size(1), C = h.size(2);
  const int64_t E = check_graph({ptr, src, perm, src_ptr, csc_dst, csc_slot}, num_src);
  const int64_t num_dst = ptr.numel() - 1;
  check_float_tensor(h, "h", dtype, h.sizes());
  check_float_tensor(a_src, "a_src", dtype, {num_src, H});
  if (a_dst) check_float_tensor(*a_dst, "a_dst", dtype, {num_dst, H});
  if (a_edge) check_float_tensor(*a_edge, "a_edge", dtype, {E, H});
  check_float_tensor(grad_out, "grad_out", dtype, {num_dst, H, C});
  check_float_tensor(out, "out", dtype, {num_dst, H, C});
  const bool use_grad_alpha = grad_alpha.has_value() && grad_alpha->numel() > 0;
  if (use_grad_alpha) check_float_tensor(*grad_alpha, "grad_alpha", dtype, {E, H});
  check_float_tensor(max, "max", acc_dtype(dtype), {num_dst, H});
  check_float_tensor(denom, "denom", acc_dtype(dtype), {num_dst, H});
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
  at::Tensor target_rows = at::empty({num_dst, 4, padded_heads}, acc_options);
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
          out.data_ptr<scalar_t>(), max.data_ptr<acc_t>(), denom.data_ptr<acc_t>(),
          need_dst ? out_slope.data_ptr<scalar_t>() : nullptr,
          need_dst ? slope_sum.data_ptr<acc_t>() : nullptr, target_rows.data_ptr<acc_t>(),
          out_ptr(grad_h, need_h), out_ptr(grad_a_src, need_src),
          out_ptr(grad_a_dst, need_dst), out_ptr(grad_a_edge, need_edge),
          num_src, num_dst, E, H, C, static_cast<acc_t>(negative_slope), drop, &bad};
      dispatch_backward(args);
    });
  });
  bad.raise();
  return {grad_h, grad_a_src, grad_a_dst, grad_a_edge};
}

}  // namespace gat_pyg
