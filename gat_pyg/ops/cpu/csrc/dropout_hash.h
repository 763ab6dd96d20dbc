// Counter-based attention-dropout hash, bit-for-bit the same as
// gat_pyg.ops.reference.dropout_hash / dropout_threshold.
//
// An entry (edge e in the caller's order, head h) of the attention is kept iff
//     hash(seed, e, h) >= floor(p * 2^32),
// so the fused kernels never store a mask: forward and backward re-evaluate it.
#pragma once

#include <cstdint>

namespace gat_pyg {
namespace dropout {

// The tail of the "lowbias32" finaliser: two multiply / xor-shift rounds mod 2^32.
inline uint32_t mix32_tail(uint32_t x) {
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// _mix32 of reference.py for 0 <= x < 2^32.
inline uint32_t mix32(uint32_t x) { return mix32_tail(x ^ (x >> 16)); }

// _mix32 of reference.py applied to a signed 64-bit value (|x| < 2^47), as the reference
// does on int64 tensors: the first xor-shift is an arithmetic shift of the int64 value,
// after which only the low 32 bits matter (the multiplications are mod 2^32).
inline uint32_t mix32_i64(int64_t x) {
  return mix32_tail(static_cast<uint32_t>(static_cast<uint64_t>(x ^ (x >> 16))));
}

// The per-call key derived from the int64 seed.
inline uint32_t key(int64_t seed) {
  const uint32_t lo = static_cast<uint32_t>(static_cast<uint64_t>(seed) & 0xFFFFFFFFull);
  return mix32(lo ^ mix32_i64(seed >> 32));
}

// hash(seed, edge_id, head) for a kernel that knows key(seed) and the number of heads.
inline uint32_t hash(uint32_t key, int64_t edge_id, int64_t num_heads, int64_t head) {
  const uint64_t counter = static_cast<uint64_t>(edge_id * num_heads + head);
  const uint32_t hashed = mix32(static_cast<uint32_t>(counter & 0xFFFFFFFFull) ^ key);
  return mix32(hashed ^ static_cast<uint32_t>(counter >> 32));
}

// floor(p * 2^32), clamped to [0, 2^32]: entries with a hash below it are dropped.
inline uint64_t threshold(double p) {
  if (!(p > 0.0)) return 0;
  const double t = p * 4294967296.0;
  return t >= 4294967296.0 ? 4294967296ull : static_cast<uint64_t>(t);
}

// Everything a kernel needs to apply inverted dropout to one (edge, head) entry.
struct Params {
  bool active = false;     // p > 0
  uint32_t key = 0;
  uint64_t threshold = 0;  // keep iff hash >= threshold
  double scale = 1.0;      // 1 / (1 - p) for kept entries (unused when p >= 1)

  // The factor m * s of an entry: 0 if dropped, else 1 / (1 - p). Branch-free: the keep
  // decision is a coin flip, which a branch would mispredict half the time.
  template <typename acc_t>
  inline acc_t factor(int64_t edge_id, int64_t num_heads, int64_t head) const {
    if (!active) return acc_t(1);
    const bool keep = static_cast<uint64_t>(hash(key, edge_id, num_heads, head)) >= threshold;
    return static_cast<acc_t>(scale) * static_cast<acc_t>(keep);
  }
};

inline Params make_params(double p, int64_t seed) {
  Params d;
  d.active = p > 0.0;
  if (d.active) {
    d.key = key(seed);
    d.threshold = threshold(p);
    d.scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  }
  return d;
}

}  // namespace dropout
}  // namespace gat_pyg
