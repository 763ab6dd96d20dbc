// Software prefetching of the rows the kernels gather at random (h, a_src, grad_out, ...):
// walking the CSR / CSC slots, a kernel asks for the rows of the slot a few places ahead, so
// that several cache misses are in flight at once instead of one at a time.
#pragma once

#include <cstdint>

namespace gat_pyg {

constexpr int64_t kPrefetchRows = 16;    // slots ahead for rows of several cache lines
constexpr int64_t kPrefetchScores = 32;  // slots ahead for short rows (a_src, a_edge, perm)

// Hints the cache to fetch the n elements at p. Always inlined: GCC may otherwise treat a
// function that only prefetches as pure and drop the calls.
template <typename T>
__attribute__((always_inline)) inline void prefetch_row(const T* p, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  const int64_t size = n * static_cast<int64_t>(sizeof(T));
  for (int64_t offset = 0; offset < size; offset += 64) __builtin_prefetch(bytes + offset, 0, 3);
}

}  // namespace gat_pyg
