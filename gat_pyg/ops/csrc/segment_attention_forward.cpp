// Forward kernel of fused segment attention (CPU, OpenMP over targets).
//
// For each target i, over its incoming CSR slots k in [ptr[i], ptr[i+1]):
//   s_k     = LeakyReLU(a_src[src[k]] + a_dst[i] + a_edge[perm[k]])
//   alpha_k = exp(s_k - max_k s_k) / (sum_k exp(s_k - max_k s_k) + 1e-16)     (PyG's softmax)
//   out_i   = sum_k dropout(alpha_k) h[src[k]]
// The scores of one target live in a per-thread scratch buffer of deg x H scalars, so h is
// read once per edge and the softmax arithmetic is exactly PyG's (max first, then exp, sum and
// division), with no rescaling. Saved for backward: max and denominator per (target, head).
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "dropout_hash.h"
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
  acc_t* max;
  acc_t* denom;
  scalar_t* alpha;  // may be null
  int64_t num_src, num_dst, num_edges, H, C;
  acc_t slope;
  dropout::Params drop;
  IndexErrorFlag* bad;
};

// CT > 0: the number of channels C known at compile time (unrolled inner loops).
template <typename scalar_t, typename index_t, int CT>
struct ForwardWorker {
  using acc_t = typename AccType<scalar_t>::type;
  const ForwardArgs<scalar_t, index_t>& a;
  std::vector<acc_t> score;  // deg x H scores, then weights, of the current target
  std::vector<acc_t> stat;   // a_dst, running max and sum of the current target (3 x H)
  std::vector<acc_t> acc;    // H x C accumulator

  explicit ForwardWorker(const ForwardArgs<scalar_t, index_t>& args)
      : a(args), stat(3 * args.H), acc(args.H * (CT > 0 ? CT : args.C)) {}

  void zero_row(int64_t i) {
    const int64_t H = a.H, HC = H * (CT > 0 ? CT : a.C);
    scalar_t* out_i = a.out + i * HC;
    for (int64_t x = 0; x < HC; ++x) out_i[x] = scalar_t(0);
    for (int64_t x = 0; x < H; ++x) {
      a.max[i * H + x] = acc_t(0);
      a.denom[i * H + x] = acc_t(1);
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
    if (static_cast<int64_t>(score.size()) < d * H) score.resize(d * H);
    acc_t* __restrict__ s = score.data();
    acc_t* __restrict__ adst = stat.data();
    acc_t* __restrict__ mx = adst + H;
    acc_t* __restrict__ sum = mx + H;
    for (int64_t x = 0; x < H; ++x) {
      adst[x] = a.a_dst ? static_cast<acc_t>(a.a_dst[i * H + x]) : acc_t(0);
      mx[x] = -std::numeric_limits<acc_t>::infinity();
      sum[x] = acc_t(0);
    }
    const bool need_eid = a.a_edge || a.drop.active || a.alpha;

    // Pass 1: validate indices, raw scores and their maximum per head.
    for (int64_t kk = 0; kk < d; ++kk) {
      const int64_t k = b + kk;
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
      const scalar_t* __restrict__ as = a.a_src + j * H;
      acc_t* __restrict__ sk = s + kk * H;
      if (a.a_edge) {
        const scalar_t* __restrict__ ae = a.a_edge + eid * H;
        for (int64_t x = 0; x < H; ++x)
          sk[x] = leaky_relu<acc_t>(
              (static_cast<acc_t>(as[x]) + adst[x]) + static_cast<acc_t>(ae[x]), a.slope);
      } else {
        for (int64_t x = 0; x < H; ++x)
          sk[x] = leaky_relu<acc_t>(static_cast<acc_t>(as[x]) + adst[x], a.slope);
      }
      for (int64_t x = 0; x < H; ++x) mx[x] = sk[x] > mx[x] ? sk[x] : mx[x];
    }

    // Pass 2: exp(s - max), the sum, the denominator; then the weights.
    for (int64_t kk = 0; kk < d; ++kk) {
      acc_t* __restrict__ sk = s + kk * H;
      for (int64_t x = 0; x < H; ++x) {
        const acc_t ex = std::exp(sk[x] - mx[x]);
        sk[x] = ex;
        sum[x] += ex;
      }
    }
    acc_t* __restrict__ den = a.denom + i * H;
    for (int64_t x = 0; x < H; ++x) {
      den[x] = sum[x] + static_cast<acc_t>(1e-16);
      a.max[i * H + x] = mx[x];
    }
    for (int64_t kk = 0; kk < d; ++kk) {
      acc_t* __restrict__ sk = s + kk * H;
      for (int64_t x = 0; x < H; ++x) sk[x] = sk[x] / den[x];
    }
    if (need_eid && (a.drop.active || a.alpha)) {
      for (int64_t kk = 0; kk < d; ++kk) {
        const int64_t eid = a.perm[b + kk];
        acc_t* __restrict__ sk = s + kk * H;
        if (a.drop.active)
          for (int64_t x = 0; x < H; ++x) sk[x] = sk[x] * a.drop.template factor<acc_t>(eid, H, x);
        if (a.alpha)
          for (int64_t x = 0; x < H; ++x) a.alpha[eid * H + x] = static_cast<scalar_t>(sk[x]);
      }
    }

    // Pass 3: the weighted sum of the sources' values.
    acc_t* __restrict__ ac = acc.data();
    for (int64_t x = 0; x < HC; ++x) ac[x] = acc_t(0);
    for (int64_t kk = 0; kk < d; ++kk) {
      const scalar_t* __restrict__ hj = a.h + static_cast<int64_t>(a.src[b + kk]) * HC;
      const acc_t* __restrict__ sk = s + kk * H;
      for (int64_t x = 0; x < H; ++x) {
        const acc_t w = sk[x];
        acc_t* __restrict__ acx = ac + x * C;
        const scalar_t* __restrict__ hx = hj + x * C;
        for (int64_t c = 0; c < C; ++c) acx[c] += w * static_cast<acc_t>(hx[c]);
      }
    }
    scalar_t* __restrict__ out_i = a.out + i * HC;
    for (int64_t x = 0; x < HC; ++x) out_i[x] = static_cast<scalar_t>(ac[x]);
  }
};

template <typename scalar_t, typename index_t, int CT>
void run_forward(const ForwardArgs<scalar_t, index_t>& args) {
  parallel_rows(args.num_dst, 64, [&] { return ForwardWorker<scalar_t, index_t, CT>(args); });
}

template <typename scalar_t, typename index_t>
void dispatch_forward(const ForwardArgs<scalar_t, index_t>& args) {
  switch (args.C) {
    case 1: return run_forward<scalar_t, index_t, 1>(args);
    case 8: return run_forward<scalar_t, index_t, 8>(args);
    case 16: return run_forward<scalar_t, index_t, 16>(args);
    case 32: return run_forward<scalar_t, index_t, 32>(args);
    case 64: return run_forward<scalar_t, index_t, 64>(args);
    default: return run_forward<scalar_t, index_t, 0>(args);
  }
}

template <typename T>
const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_attention_forward(
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_alpha) {
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
  check_dropout(dropout, seed);

  const auto acc_options = h.options().dtype(acc_dtype(dtype));
  at::Tensor out = at::empty({num_dst, H, C}, h.options());
  at::Tensor max = at::empty({num_dst, H}, acc_options);
  at::Tensor denom = at::empty({num_dst, H}, acc_options);
  at::Tensor alpha = at::empty({return_alpha ? E : 0, H}, h.options());
  if (H == 0) return {out, max, denom, alpha};
  const dropout::Params drop = dropout::make_params(dropout, read_seed(seed));

  IndexErrorFlag bad;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "segment_attention_forward", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    AT_DISPATCH_INDEX_TYPES(ptr.scalar_type(), "segment_attention_forward", [&] {
      check_ptr_ends<index_t>(ptr, "ptr", E);
      ForwardArgs<scalar_t, index_t> args{
          ptr.data_ptr<index_t>(), src.data_ptr<index_t>(), perm.data_ptr<index_t>(),
          h.data_ptr<scalar_t>(), a_src.data_ptr<scalar_t>(), optional_ptr<scalar_t>(a_dst),
          optional_ptr<scalar_t>(a_edge), out.data_ptr<scalar_t>(), max.data_ptr<acc_t>(),
          denom.data_ptr<acc_t>(), return_alpha ? alpha.data_ptr<scalar_t>() : nullptr,
          num_src, num_dst, E, H, C, static_cast<acc_t>(negative_slope), drop, &bad};
      dispatch_forward(args);
    });
  });
  bad.raise();
  return {out, max, denom, alpha};
}

}  // namespace gat_pyg
