// The kernels' threading: one OpenMP team over the rows (targets or sources) of a pass.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace gat_pyg {

// Runs worker(i) for every row i in [0, n) on one OpenMP team of at::get_num_threads()
// threads (so torch.set_num_threads applies), handing out chunks of rows dynamically (rows
// differ in degree). Each thread builds its own worker (its scratch buffers) with
// make_worker(). Every output row is written by exactly one worker call, in a fixed order
// within the row, so results never depend on the schedule or the number of threads.
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

}  // namespace gat_pyg
