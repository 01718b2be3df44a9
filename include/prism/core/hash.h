// Portable 64-bit mixing for seeds and shuffles that must be identical on every platform and
// standard library (std::shuffle / std::uniform_int_distribution are not), e.g. the RL prompt
// order a checkpoint resumes into and the study's generated task files.
#pragma once

#include <cstdint>

namespace prism {

/// splitmix64's finaliser (Steele, Lea, Flood 2014): a bijection on 64-bit words.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace prism
