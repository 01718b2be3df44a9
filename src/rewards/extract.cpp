// The answer-extraction ladder (math) and its text helpers.
#include "rewards/extract.h"

#include <cctype>
#include <string>

#include "prism/rewards/math.h"
#include "rewards/math_expr.h"

namespace prism::rewards {
namespace detail {

std::string trim(std::string_view s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return std::string(s.substr(a, b - a));
}

std::string_view after_think(std::string_view text) {
  auto pos = text.rfind("</think>");
  return pos == std::string_view::npos ? text : text.substr(pos + 8);
}

std::size_t rfind_nocase(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (std::size_t i = hay.size() - needle.size() + 1; i-- > 0;) {
    bool ok = true;
    for (std::size_t j = 0; j < needle.size() && ok; ++j)
      ok = std::tolower(static_cast<unsigned char>(hay[i + j])) == std::tolower(static_cast<unsigned char>(needle[j]));
    if (ok) return i;
  }
  return std::string_view::npos;
}

std::optional<std::string> last_boxed(std::string_view text) {
  std::size_t end = text.size();
  while (true) {
    std::size_t b = text.rfind("\\boxed", end == 0 ? 0 : end - 1);
    std::size_t f = text.rfind("\\fbox", end == 0 ? 0 : end - 1);
    std::size_t pos = b == std::string_view::npos ? f : (f == std::string_view::npos ? b : std::max(b, f));
    if (pos == std::string_view::npos || pos >= end) return std::nullopt;
    std::size_t i = pos + (pos == b ? 6 : 5);
    while (i < text.size() && text[i] == ' ') ++i;
    if (i < text.size() && text[i] == '{') {
      int depth = 0;
      for (std::size_t k = i; k < text.size(); ++k) {
        if (text[k] == '\\' && k + 1 < text.size()) {
          ++k;
          continue;
        }
        if (text[k] == '{') ++depth;
        if (text[k] == '}' && --depth == 0) return trim(text.substr(i + 1, k - i - 1));
      }
    } else if (i > pos + 5 && i < text.size()) {  // "\boxed 5"
      std::size_t k = i;
      while (k < text.size() && !std::isspace(static_cast<unsigned char>(text[k])) && text[k] != '$') ++k;
      if (k > i) return std::string(text.substr(i, k - i));
    }
    if (pos == 0) return std::nullopt;
    end = pos;  // unbalanced: try the previous one
  }
}

namespace {

// "$x$. I hope it is correct." -> "x"; "5 apples." -> "5 apples"
std::string clean_phrase_answer(std::string_view rest) {
  std::string s = trim(rest);
  while (!s.empty() && (s[0] == ':' || s[0] == ' ')) s.erase(0, 1);
  if (auto boxed = last_boxed(s)) return *boxed;
  if (!s.empty() && s[0] == '$') {
    bool dbl = s.size() > 1 && s[1] == '$';
    std::size_t start = dbl ? 2 : 1;
    std::size_t close = s.find('$', start);
    if (close != std::string::npos) return trim(s.substr(start, close - start));
  }
  if (s.rfind("\\(", 0) == 0) {
    std::size_t close = s.find("\\)");
    if (close != std::string::npos) return trim(s.substr(2, close - 2));
  }
  if (auto nl = s.find('\n'); nl != std::string::npos) s = s.substr(0, nl);
  // end of the sentence: ". " followed by more text
  for (std::size_t i = 0; i + 1 < s.size(); ++i)
    if (s[i] == '.' && s[i + 1] == ' ') {
      s = s.substr(0, i);
      break;
    }
  s = trim(s);
  while (!s.empty() && (s.back() == '.' || s.back() == '!')) s.pop_back();
  return trim(s);
}

std::optional<std::string> last_number(std::string_view t) {
  std::size_t i = t.size();
  while (i > 0) {
    --i;
    if (!std::isdigit(static_cast<unsigned char>(t[i]))) continue;
    std::size_t end = i + 1, start = i;
    while (start > 0 && (std::isdigit(static_cast<unsigned char>(t[start - 1])) || t[start - 1] == '.' ||
                         t[start - 1] == ',' || t[start - 1] == '/'))
      --start;
    while (start < end && !std::isdigit(static_cast<unsigned char>(t[start]))) ++start;
    if (start > 0 && t[start - 1] == '-') --start;
    return std::string(t.substr(start, end - start));
  }
  return std::nullopt;
}

}  // namespace
}  // namespace detail

std::optional<std::string> extract_math_answer(std::string_view completion, bool last_number_fallback) {
  using namespace detail;
  std::string_view text = after_think(completion);
  if (auto b = last_boxed(text)) return b;
  if (auto pos = text.rfind("####"); pos != std::string_view::npos) {
    std::string rest = trim(text.substr(pos + 4));
    if (auto nl = rest.find('\n'); nl != std::string::npos) rest = trim(rest.substr(0, nl));
    if (!rest.empty()) return rest;
  }
  std::size_t best = std::string_view::npos, len = 0;
  for (std::string_view phrase : {"answer is", "answer:"}) {
    auto pos = rfind_nocase(text, phrase);
    if (pos != std::string_view::npos && (best == std::string_view::npos || pos > best)) {
      best = pos;
      len = phrase.size();
    }
  }
  if (best != std::string_view::npos) {
    std::string a = clean_phrase_answer(text.substr(best + len));
    if (!a.empty()) return a;
  }
  if (last_number_fallback) return last_number(text);
  return std::nullopt;
}

std::string gold_math_answer(std::string_view answer) {
  if (auto b = detail::last_boxed(answer)) return *b;
  if (auto pos = answer.rfind("####"); pos != std::string_view::npos) return detail::trim(answer.substr(pos + 4));
  return detail::trim(answer);
}

std::string normalize_math_answer(std::string_view answer) { return detail::normalize_answer(answer); }

}  // namespace prism::rewards
