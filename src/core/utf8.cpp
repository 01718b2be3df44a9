// The UTF-8 validator (prism/core/utf8.h); byte ranges from the Unicode standard's table 3-7.
#include "prism/core/utf8.h"

namespace prism::utf8 {

std::size_t sequence_length(std::string_view s, std::size_t i, std::size_t* invalid_length) {
  const auto* u = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  const unsigned char c = u[i];
  if (c < 0x80) return 1;
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
  } else {
    if (invalid_length) *invalid_length = 1;
    return 0;
  }
  std::size_t k = 1;
  for (; k <= need; ++k) {
    if (i + k >= n) break;
    const unsigned char b = u[i + k];
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
  }
  if (k == need + 1) return need + 1;
  if (invalid_length) *invalid_length = k;
  return 0;
}

bool is_valid(std::string_view s) {
  const auto* u = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    if (u[i] < 0x80) {  // ASCII runs dominate real text
      ++i;
      continue;
    }
    const std::size_t l = sequence_length(s, i);
    if (l == 0) return false;
    i += l;
  }
  return true;
}

std::size_t incomplete_tail(std::string_view s) {
  const auto* u = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const unsigned char c = u[n - back];
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return len > back ? back : 0;
  }
  return 0;
}

}  // namespace prism::utf8
