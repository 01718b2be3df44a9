// Dot product for the CPU ops (internal header): 8 independent partial sums, which the compiler
// vectorises without reassociating a single running sum (no -ffast-math), summed in a fixed order
// so the result does not depend on the caller's threading.
#pragma once

#include <cstdint>

namespace prism::ops::cpu {

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace prism::ops::cpu
