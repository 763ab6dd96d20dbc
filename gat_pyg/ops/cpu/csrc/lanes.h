// Per-edge head vectors: the H attention heads of one edge (or target) live in "lanes", GCC
// vector-extension vectors of the machine's SIMD width (32 bytes with AVX, else 16: a width
// every x86-64 and AArch64 CPU has; the build is -march=native), processed one group of lanes
// at a time (ceil(H / L) groups; lanes past H are padding, never stored).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#define GAT_PYG_INLINE inline __attribute__((always_inline))

namespace gat_pyg {

#ifdef __AVX__
constexpr int64_t kVectorBytes = 32;
#else
constexpr int64_t kVectorBytes = 16;
#endif

template <typename T> struct LaneType {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};
template <typename T> using Lanes = typename LaneType<T>::type;
// Lanes per vector.
template <typename T> constexpr int64_t kLanes = kVectorBytes / static_cast<int64_t>(sizeof(T));

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
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    if (n == kLanes<acc_t>) {
      Lanes<acc_t> v;
      std::memcpy(&v, p, sizeof(v));
      return v;
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
