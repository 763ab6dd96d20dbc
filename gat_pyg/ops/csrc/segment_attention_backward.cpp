// Backward kernel of fused segment attention (CPU, OpenMP, no atomics).
//
// With alpha_k recomputed from the saved (max, denominator) per (target, head), the dropout
// factor m_k s (hash, not stored) and g_i = dL/dout_i:
//   dL/dalpha_k = m_k s (g_i . h_j + dL/dalpha_out_k)   (second term if alpha was returned)
//   D_i         = sum_k alpha_k dL/dalpha_k
//   de_k        = alpha_k (dL/dalpha_k - D_i) * LeakyReLU'(raw score_k)
//   grad a_dst_i = sum_k de_k,   grad a_edge[perm[k]] = de_k,
//   grad h_j     = sum_{k: src[k] = j} m_k s alpha_k g_i,   grad a_src_j = sum_{k: src[k] = j} de_k
// Pass 1 runs over targets (CSR) and produces the target-side sums, the per-edge a_edge
// gradient and D_i; pass 2 runs over sources (CSC) and produces the source-side sums,
// recomputing alpha_k and de_k from per-target rows (a_dst, max, denominator, D). Each output
// row is summed by one thread in a fixed order, so results are bitwise reproducible for any
// number of threads. Temporary memory: deg x 3H scalars per thread and N_dst x 4H.
#include <cmath>
#include <vector>

#include "checks.h"
#include "dropout_hash.h"
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
  const acc_t* max;
  const acc_t* denom;
  acc_t* target_rows;  // [N_dst, 4, H]: a_dst, max, denominator, D
  scalar_t* grad_h;       // may be null
  scalar_t* grad_a_src;   // may be null
  scalar_t* grad_a_dst;   // may be null
  scalar_t* grad_a_edge;  // may be null
  int64_t num_src, num_dst, num_edges, H, C;
  acc_t slope;
  dropout::Params drop;
  bool need_scores;  // any of grad a_src / a_dst / a_edge
  IndexErrorFlag* bad;

  bool need_eid() const { return a_edge || drop.active || grad_alpha; }
};

// Pass 1: one target per call.
template <typename scalar_t, typename index_t, int CT>
struct TargetWorker {
  using acc_t = typename AccType<scalar_t>::type;
  const BackwardArgs<scalar_t, index_t>& a;
  std::vector<acc_t> scratch;  // deg x (alpha, dL/dalpha, LeakyReLU') x H
  std::vector<acc_t> gsum;     // grad a_dst_i (H)

  explicit TargetWorker(const BackwardArgs<scalar_t, index_t>& args)
      : a(args), gsum(args.H) {}

  void finish_empty(int64_t i, acc_t* row) {
    const int64_t H = a.H;
    for (int64_t x = 0; x < 4 * H; ++x) row[x] = acc_t(0);
    for (int64_t x = 0; x < H; ++x) row[2 * H + x] = acc_t(1);
    if (a.grad_a_dst)
      for (int64_t x = 0; x < H; ++x) a.grad_a_dst[i * H + x] = scalar_t(0);
  }

  void operator()(int64_t i) {
    const int64_t H = a.H;
    const int64_t C = CT > 0 ? CT : a.C;
    const int64_t HC = H * C;
    acc_t* __restrict__ row = a.target_rows + i * 4 * H;
    acc_t* __restrict__ adst = row;
    acc_t* __restrict__ mx = row + H;
    acc_t* __restrict__ den = row + 2 * H;
    acc_t* __restrict__ D = row + 3 * H;
    const int64_t b = a.ptr[i], e = a.ptr[i + 1];
    if (b < 0 || e < b || e > a.num_edges) {
      a.bad->set("ptr", i + 1, e, b < 0 ? 0 : b, a.num_edges + 1);
      finish_empty(i, row);
      return;
    }
    const int64_t d = e - b;
    if (d == 0) {
      finish_empty(i, row);
      return;
    }
    for (int64_t x = 0; x < H; ++x) {
      adst[x] = a.a_dst ? static_cast<acc_t>(a.a_dst[i * H + x]) : acc_t(0);
      mx[x] = a.max[i * H + x];
      den[x] = a.denom[i * H + x];
      D[x] = acc_t(0);
    }
    if (!a.need_scores) return;

    if (static_cast<int64_t>(scratch.size()) < 3 * d * H) scratch.resize(3 * d * H);
    const scalar_t* __restrict__ g = a.grad_out + i * HC;
    const bool need_eid = a.need_eid();
    for (int64_t kk = 0; kk < d; ++kk) {
      const int64_t k = b + kk;
      const int64_t j = a.src[k];
      if (j < 0 || j >= a.num_src) {
        a.bad->set("src", k, j, 0, a.num_src);
        finish_empty(i, row);
        return;
      }
      int64_t eid = 0;
      if (need_eid) {
        eid = a.perm[k];
        if (eid < 0 || eid >= a.num_edges) {
          a.bad->set("perm", k, eid, 0, a.num_edges);
          finish_empty(i, row);
          return;
        }
      }
      acc_t* __restrict__ al = scratch.data() + kk * 3 * H;
      acc_t* __restrict__ da = al + H;
      acc_t* __restrict__ fa = da + H;
      const scalar_t* __restrict__ as = a.a_src + j * H;
      for (int64_t x = 0; x < H; ++x) {
        acc_t raw = static_cast<acc_t>(as[x]) + adst[x];
        if (a.a_edge) raw = raw + static_cast<acc_t>(a.a_edge[eid * H + x]);
        fa[x] = raw > acc_t(0) ? acc_t(1) : a.slope;
        al[x] = std::exp(leaky_relu<acc_t>(raw, a.slope) - mx[x]) / den[x];
      }
      const scalar_t* __restrict__ hj = a.h + j * HC;
      for (int64_t x = 0; x < H; ++x) {
        const scalar_t* __restrict__ gx = g + x * C;
        const scalar_t* __restrict__ hx = hj + x * C;
        acc_t dot = acc_t(0);
        for (int64_t c = 0; c < C; ++c)
          dot += static_cast<acc_t>(gx[c]) * static_cast<acc_t>(hx[c]);
        if (a.grad_alpha) dot = dot + static_cast<acc_t>(a.grad_alpha[eid * H + x]);
        const acc_t dal = a.drop.template factor<acc_t>(eid, H, x) * dot;
        da[x] = dal;
        D[x] += al[x] * dal;
      }
    }
    if (!(a.grad_a_dst || a.grad_a_edge)) return;
    acc_t* __restrict__ gdst = gsum.data();
    for (int64_t x = 0; x < H; ++x) gdst[x] = acc_t(0);
    for (int64_t kk = 0; kk < d; ++kk) {
      const acc_t* __restrict__ al = scratch.data() + kk * 3 * H;
      const acc_t* __restrict__ da = al + H;
      const acc_t* __restrict__ fa = da + H;
      scalar_t* __restrict__ ge =
          a.grad_a_edge ? a.grad_a_edge + static_cast<int64_t>(a.perm[b + kk]) * H : nullptr;
      for (int64_t x = 0; x < H; ++x) {
        const acc_t de = al[x] * (da[x] - D[x]) * fa[x];
        gdst[x] += de;
        if (ge) ge[x] = static_cast<scalar_t>(de);
      }
    }
    if (a.grad_a_dst)
      for (int64_t x = 0; x < H; ++x) a.grad_a_dst[i * H + x] = static_cast<scalar_t>(gdst[x]);
  }
};

// Pass 2: one source per call.
template <typename scalar_t, typename index_t, int CT>
struct SourceWorker {
  using acc_t = typename AccType<scalar_t>::type;
  const BackwardArgs<scalar_t, index_t>& a;
  std::vector<acc_t> acc;  // grad h_j (H x C), then grad a_src_j (H)

  explicit SourceWorker(const BackwardArgs<scalar_t, index_t>& args)
      : a(args), acc(args.H * (CT > 0 ? CT : args.C) + args.H) {}

  void operator()(int64_t j) {
    const int64_t H = a.H;
    const int64_t C = CT > 0 ? CT : a.C;
    const int64_t HC = H * C;
    acc_t* __restrict__ gh = acc.data();
    acc_t* __restrict__ gs = gh + HC;
    for (int64_t x = 0; x < HC + H; ++x) acc[x] = acc_t(0);
    const int64_t b = a.src_ptr[j], e = a.src_ptr[j + 1];
    if (b < 0 || e < b || e > a.num_edges) {
      a.bad->set("src_ptr", j + 1, e, b < 0 ? 0 : b, a.num_edges + 1);
    } else {
      const bool need_eid = a.need_eid();
      const bool need_src = a.grad_a_src != nullptr;
      const bool need_h = a.grad_h != nullptr;
      const scalar_t* __restrict__ hj = a.h + j * HC;
      const scalar_t* __restrict__ as = a.a_src + j * H;
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = a.csc_dst[t];
        if (i < 0 || i >= a.num_dst) {
          a.bad->set("csc_dst", t, i, 0, a.num_dst);
          break;
        }
        const int64_t k = a.csc_slot[t];
        if (k < 0 || k >= a.num_edges) {
          a.bad->set("csc_slot", t, k, 0, a.num_edges);
          break;
        }
        int64_t eid = 0;
        if (need_eid) {
          eid = a.perm[k];
          if (eid < 0 || eid >= a.num_edges) {
            a.bad->set("perm", k, eid, 0, a.num_edges);
            break;
          }
        }
        const acc_t* __restrict__ row = a.target_rows + i * 4 * H;
        const scalar_t* __restrict__ g = a.grad_out + i * HC;
        for (int64_t x = 0; x < H; ++x) {
          acc_t raw = static_cast<acc_t>(as[x]) + row[x];
          if (a.a_edge) raw = raw + static_cast<acc_t>(a.a_edge[eid * H + x]);
          const acc_t alpha =
              std::exp(leaky_relu<acc_t>(raw, a.slope) - row[H + x]) / row[2 * H + x];
          const acc_t m = a.drop.template factor<acc_t>(eid, H, x);
          const scalar_t* __restrict__ gx = g + x * C;
          if (need_h) {
            const acc_t w = alpha * m;
            acc_t* __restrict__ ghx = gh + x * C;
            for (int64_t c = 0; c < C; ++c) ghx[c] += w * static_cast<acc_t>(gx[c]);
          }
          if (need_src) {
            const scalar_t* __restrict__ hx = hj + x * C;
            acc_t dot = acc_t(0);
            for (int64_t c = 0; c < C; ++c)
              dot += static_cast<acc_t>(gx[c]) * static_cast<acc_t>(hx[c]);
            if (a.grad_alpha) dot = dot + static_cast<acc_t>(a.grad_alpha[eid * H + x]);
            const acc_t dal = m * dot;
            const acc_t fa = raw > acc_t(0) ? acc_t(1) : a.slope;
            gs[x] += alpha * (dal - row[3 * H + x]) * fa;
          }
        }
      }
    }
    if (a.grad_h)
      for (int64_t x = 0; x < HC; ++x) a.grad_h[j * HC + x] = static_cast<scalar_t>(gh[x]);
    if (a.grad_a_src)
      for (int64_t x = 0; x < H; ++x) a.grad_a_src[j * H + x] = static_cast<scalar_t>(gs[x]);
  }
};

template <typename scalar_t, typename index_t, int CT>
void run_backward(const BackwardArgs<scalar_t, index_t>& args) {
  parallel_rows(args.num_dst, 64,
                [&] { return TargetWorker<scalar_t, index_t, CT>(args); });
  args.bad->raise();
  if (args.grad_h || args.grad_a_src)
    parallel_rows(args.num_src, 64,
                  [&] { return SourceWorker<scalar_t, index_t, CT>(args); });
}

template <typename scalar_t, typename index_t>
void dispatch_backward(const BackwardArgs<scalar_t, index_t>& args) {
  switch (args.C) {
    case 1: return run_backward<scalar_t, index_t, 1>(args);
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
    const std::optional<at::Tensor>& a_edge, const at::Tensor& max, const at::Tensor& denom,
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
  const bool use_grad_alpha = grad_alpha.has_value() && grad_alpha->numel() > 0;
  if (use_grad_alpha) check_float_tensor(*grad_alpha, "grad_alpha", dtype, {E, H});
  check_float_tensor(max, "max", acc_dtype(dtype), {num_dst, H});
  check_float_tensor(denom, "denom", acc_dtype(dtype), {num_dst, H});
  check_dropout(dropout, seed);

  const bool need_h = output_mask[0];
  const bool need_src = output_mask[1];
  const bool need_dst = output_mask[2] && a_dst.has_value();
  const bool need_edge = output_mask[3] && a_edge.has_value();
  auto empty = [&] { return at::empty({0}, h.options()); };
  at::Tensor grad_h = need_h ? at::empty_like(h) : empty();
  at::Tensor grad_a_src = need_src ? at::empty_like(a_src) : empty();
  at::Tensor grad_a_dst = need_dst ? at::empty_like(*a_dst) : empty();
  at::Tensor grad_a_edge = need_edge ? at::empty_like(*a_edge) : empty();
  if (!(need_h || need_src || need_dst || need_edge)) {
    return {grad_h, grad_a_src, grad_a_dst, grad_a_edge};
  }
  if (H == 0) return {grad_h, grad_a_src, grad_a_dst, grad_a_edge};
  at::Tensor target_rows = at::empty({num_dst, 4, H}, h.options().dtype(acc_dtype(dtype)));
  const dropout::Params drop = dropout::make_params(dropout, read_seed(seed));

  IndexErrorFlag bad;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "segment_attention_backward", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    AT_DISPATCH_INDEX_TYPES(ptr.scalar_type(), "segment_attention_backward", [&] {
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
          max.data_ptr<acc_t>(), denom.data_ptr<acc_t>(), target_rows.data_ptr<acc_t>(),
          out_ptr(grad_h, need_h), out_ptr(grad_a_src, need_src),
          out_ptr(grad_a_dst, need_dst), out_ptr(grad_a_edge, need_edge),
          num_src, num_dst, E, H, C, static_cast<acc_t>(negative_slope), drop,
          need_src || need_dst || need_edge, &bad};
      dispatch_backward(args);
    });
  });
  bad.raise();
  return {grad_h, grad_a_src, grad_a_dst, grad_a_edge};
}

}  // namespace gat_pyg
