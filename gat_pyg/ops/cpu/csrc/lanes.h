// Per-edge head vectors: the H attention heads of one edge (or target) live in "lanes", GCC
// vector-extension vectors of the machine's SIMD width (32 bytes with AVX, else 16: a width
// every x86-64 and AArch64 CPU has; the build is -march=native), processed one group of lanes
// at a time (ceil(H / L) groups; lanes past H are padding, never stored).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define GAT_PYG_INLINE inline __attribute__((always_inline))

namespace gat_pyg {

#ifdef __AVX__
constexpr int64_t kVectorBytes = 32;
#else
constexpr int64_t kVectorBytes = 16;
#endif

// Lanes per vector.
template <typename T> constexpr int64_t kLanes = kVectorBytes / static_cast<int64_t>(sizeof(T));

// N values of T in one GCC vector (Lanes<T>, one machine vector, is Vec<T, kLanes<T>>; others, such as the
// double lanes of a float vector's values, may span several machine vectors).
template <typename T, int64_t N> struct VecType {
  typedef T type __attribute__((vector_size(sizeof(T) * N)));
};
template <typename T, int64_t N> using Vec = typename VecType<T, N>::type;

template <typename T> using Lanes = Vec<T, kLanes<T>>;

// Number of lane groups for H heads, and the number of real heads in group g.
template <typename T> inline int64_t lane_groups(int64_t H) {
  return (H + kLanes<T> - 1) / kLanes<T>;
}
template <typename T> inline int64_t heads_in_group(int64_t H, int64_t g) {
  const int64_t left = H - g * kLanes<T>;
  return left < kLanes<T> ? left : kLanes<T>;
}

template <typename T> GAT_PYG_INLINE Lanes<T> broadcast(T value) { return Lanes<T>{} + value; }

// Loads n <= kLanes<acc_t> consecutive values into the first lanes; the others get `fill`.
template <typename acc_t, typename scalar_t>
GAT_PYG_INLINE Lanes<acc_t> load_lanes(const scalar_t* p, int64_t n, acc_t fill = acc_t(0)) {
  if constexpr (std::is_arithmetic_v<scalar_t>) {
    if (n == kLanes<acc_t>) {  // one vector load (and conversion, e.g. float to double)
      typedef scalar_t Loaded __attribute__((vector_size(sizeof(scalar_t) * kLanes<acc_t>)));
      Loaded v;
      std::memcpy(&v, p, sizeof(v));
      return __builtin_convertvector(v, Lanes<acc_t>);
    }
  }
  Lanes<acc_t> v = broadcast<acc_t>(fill);
  for (int64_t x = 0; x < n; ++x) v[x] = static_cast<acc_t>(p[x]);
  return v;
}

// Stores the first n <= kLanes<acc_t> lanes.
template <typename acc_t, typename scalar_t>
GAT_PYG_INLINE void store_lanes(scalar_t* p, const Lanes<acc_t>& v, int64_t n) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    if (n == kLanes<acc_t>) {
      std::memcpy(p, &v, sizeof(v));
      return;
    }
  }
  for (int64_t x = 0; x < n; ++x) p[x] = static_cast<scalar_t>(v[x]);
}

template <typename T> GAT_PYG_INLINE Lanes<T> max_lanes(const Lanes<T>& a, const Lanes<T>& b) {
  return a > b ? a : b;
}

// Lane sums of N vectors of N lanes at once: a fixed tree that at each level adds, pairwise,
// the halves of two vectors (shuffled side by side), so that the last level holds sum(v[l])
// in lane l: 2 (N - 1) shuffles and N - 1 additions for N sums, where a horizontal sum of
// each vector would take N log2(N) additions. The order of additions depends only on n.

// Lane i of a fold at block width B: the blocks of B lanes at even block positions of `a`,
// then those of `b` (with `odd`, the blocks at odd positions).
constexpr int64_t fold_lane(int64_t N, int64_t B, int64_t i, bool odd) {
  const int64_t k = i < N / 2 ? i : i - N / 2;
  return (i < N / 2 ? 0 : N) + (k / B) * 2 * B + k % B + (odd ? B : 0);
}

template <typename T, int64_t N, int64_t B, size_t... I>
GAT_PYG_INLINE Vec<T, N> fold_pair(const Vec<T, N>& a, const Vec<T, N>& b,
                                   std::index_sequence<I...>) {
  using Mask = Vec<std::conditional_t<sizeof(T) == 4, int32_t, int64_t>, N>;
  const Mask even = {fold_lane(N, B, I, false)...};
  const Mask odd = {fold_lane(N, B, I, true)...};
  return __builtin_shuffle(a, b, even) + __builtin_shuffle(a, b, odd);
}

template <typename T, int64_t N, int64_t B>
GAT_PYG_INLINE void fold_levels(Vec<T, N>* v, int64_t n) {
  if constexpr (B >= 1) {
    if (n == 1) {  // one vector left: fold it with itself
      v[0] = fold_pair<T, N, B>(v[0], v[0], std::make_index_sequence<static_cast<size_t>(N)>{});
    } else {
      for (int64_t x = 0; x < n / 2; ++x)
        v[x] = fold_pair<T, N, B>(v[2 * x], v[2 * x + 1],
                                  std::make_index_sequence<static_cast<size_t>(N)>{});
    }
    fold_levels<T, N, B / 2>(v, n > 1 ? n / 2 : 1);
  }
}

// Lane l of the result = the sum of the lanes of v[l], for l < n <= N (the lanes from n on
// are not sums); v is overwritten. Only the next power of two >= n vectors take part.
template <typename T, int64_t N>
GAT_PYG_INLINE Vec<T, N> lane_sums(Vec<T, N> (&v)[N], int64_t n) {
  int64_t m = 1;
  while (m < n) m *= 2;
  fold_levels<T, N, N / 2>(v, m);
  return v[0];
}

// torch.nn.functional.leaky_relu (x > 0 ? x : x * slope, as in ATen), branch-free:
// max(x, 0) + slope * min(x, 0) has the same values (and keeps NaN).
template <typename T> GAT_PYG_INLINE Lanes<T> leaky_relu(const Lanes<T>& x, T slope) {
  const Lanes<T> zero = {};
  const Lanes<T> pos = x > zero ? x : zero;
  const Lanes<T> neg = x > zero ? zero : x;
  return pos + slope * neg;
}

// g * LeakyReLU'(x), with ATen's derivative: 1 if x > 0, else slope.
template <typename T>
GAT_PYG_INLINE Lanes<T> leaky_relu_grad(const Lanes<T>& g, const Lanes<T>& x, T slope) {
  const Lanes<T> scaled = g * slope;
  return x > Lanes<T>{} ? g : scaled;
}

}  // namespace gat_pyg
