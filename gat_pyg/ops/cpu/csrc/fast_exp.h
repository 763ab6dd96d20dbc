// exp on head lanes for the softmax kernels.
//
// float: Cephes-style range reduction x = n ln2 + r with a degree-6 polynomial for e^r and 2^n
// built from the exponent bits, in plain vector arithmetic (vectorised on any target);
// relative error below 1.4 ulp of the exact value over [-87.3, 0], exactly 1 at 0, and 0
// below -87.3 (where exp is denormal; the kernels only take exp(score - max) <= 1).
// double: std::exp per lane, so float64 results agree with the reference to ~1e-15.
#pragma once

#include <cmath>
#include <cstdint>

#include "lanes.h"

namespace gat_pyg {

GAT_PYG_INLINE Lanes<float> exp_lanes(const Lanes<float>& x) {
  typedef int32_t Ints __attribute__((vector_size(kVectorBytes)));
  const Lanes<float> low = broadcast(-87.33654f);  // exp(low) = 2^-126
  const Lanes<float> high = broadcast(88.0f);
  const Lanes<float> zero = {};
  const float shift = 12582912.0f;  // 1.5 * 2^23: t = y + shift holds round(y) in its low bits
  Lanes<float> xc = x < low ? low : x;
  xc = xc > high ? high : xc;
  const Lanes<float> t = xc * 1.44269504088896341f + shift;
  const Lanes<float> n = t - shift;
  Lanes<float> r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Lanes<float> p = broadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const Ints bits = ((__builtin_bit_cast(Ints, t) - 0x4B400000) + 127) << 23;
  const Lanes<float> result = p * __builtin_bit_cast(Lanes<float>, bits);
  return x < low ? zero : result;
}

GAT_PYG_INLINE Lanes<double> exp_lanes(const Lanes<double>& x) {
  Lanes<double> y;
  for (int64_t l = 0; l < kLanes<double>; ++l) y[l] = std::exp(x[l]);
  return y;
}

}  // namespace gat_pyg
