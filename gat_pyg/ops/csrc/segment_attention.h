// Declarations shared by the segment-attention kernels and their registration.
//
// Layout: h [N_src, H, C], a_src [N_src, H], a_dst [N_dst, H], a_edge [E, H] (caller's edge
// order), all contiguous and of one float dtype; the graph is SegmentGraph's CSR (ptr, src,
// perm) and CSC (src_ptr, csc_dst, csc_slot), one index dtype (int64 or int32).
//
// Forward saves, per (target, head), only the softmax statistics: the maximum score and the
// denominator sum + 1e-16 (in the accumulation dtype). Backward recomputes the attention from
// them; nothing of size E x C is ever stored.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

namespace gat_pyg {

// The accumulation type: float for bfloat16 and float, double for double.
template <typename scalar_t> struct AccType { using type = scalar_t; };
template <> struct AccType<c10::BFloat16> { using type = float; };

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kBFloat16 ? at::kFloat : t;
}

// torch.nn.functional.leaky_relu and its derivative (x > 0 ? 1 : slope), as in ATen.
template <typename T> inline T leaky_relu(T x, T slope) { return x > T(0) ? x : x * slope; }

// Runs worker(i) for every row i in [0, n) on one OpenMP team of at::get_num_threads()
// threads (so torch.set_num_threads applies), handing out chunks of rows dynamically. Each
// thread builds its own worker (its scratch buffers) with make_worker(). Every output row is
// written by exactly one worker call, so results never depend on the schedule.
template <typename MakeWorker>
inline void parallel_rows(int64_t n, int64_t chunk, const MakeWorker& make_worker) {
  if (n <= 0) return;
  const int threads = (n <= chunk || at::in_parallel_region()) ? 1 : at::get_num_threads();
  if (threads <= 1) {
    auto worker = make_worker();
    for (int64_t i = 0; i < n; ++i) worker(i);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    auto worker = make_worker();
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t start = 0; start < n; start += chunk) {
      const int64_t end = start + chunk < n ? start + chunk : n;
      for (int64_t i = start; i < end; ++i) worker(i);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_attention_forward(
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_alpha);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_attention_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& perm,
    const at::Tensor& src_ptr, const at::Tensor& csc_dst, const at::Tensor& csc_slot,
    const at::Tensor& h, const at::Tensor& a_src, const std::optional<at::Tensor>& a_dst,
    const std::optional<at::Tensor>& a_edge, const at::Tensor& max, const at::Tensor& denom,
    double negative_slope, double dropout, const std::optional<at::Tensor>& seed,
    std::array<bool, 4> output_mask);

}  // namespace gat_pyg
