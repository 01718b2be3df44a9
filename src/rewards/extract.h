// Shared text helpers of the rewards module (internal): \boxed{} extraction with brace matching
// and the "after </think>" rule, used by the math and multiple-choice verifiers.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace prism::rewards::detail {

/// Text after the last "</think>" (the whole text when there is none).
std::string_view after_think(std::string_view text);
/// Content of the last \boxed{...} / \fbox{...} (or "\boxed 5") with balanced braces.
std::optional<std::string> last_boxed(std::string_view text);
/// Position of the last case-insensitive occurrence of `needle`, or npos.
std::size_t rfind_nocase(std::string_view hay, std::string_view needle);
std::string trim(std::string_view s);

}  // namespace prism::rewards::detail
