// UTF-8 validation: the one validator of prism (the tokenizer, corpus preparation and JSONL
// readers all use it), strict as Rust's std::str::from_utf8: no overlong forms, no surrogates,
// nothing above U+10FFFF, no truncated sequences.
#pragma once

#include <cstddef>
#include <string_view>

namespace prism::utf8 {

/// Length (1-4) of the valid sequence starting at s[i], or 0 when it is invalid; then, when
/// `invalid_length` is given, it receives the length of the maximal invalid subpart there (what
/// Rust's String::from_utf8_lossy replaces by one U+FFFD). Requires i < s.size().
std::size_t sequence_length(std::string_view s, std::size_t i, std::size_t* invalid_length = nullptr);

/// Whether all of `s` is valid UTF-8.
bool is_valid(std::string_view s);

/// How many trailing bytes of `s` (0-3) are the start of a multi-byte sequence cut off by the end
/// of `s`: a reader that validates a stream block by block carries them over to the next block.
std::size_t incomplete_tail(std::string_view s);

}  // namespace prism::utf8
