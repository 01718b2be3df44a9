// Answer normalisation: the string rewrites that make "\dfrac{1}{2}\text{ cm}." and "\frac12" the
// same text before parsing. Follows the Hendrycks/Minerva and latex2sympy2_extended rules where
// they agree; each rule is a plain string pass (no regex engine: these run per sample, per thread).
#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

#include "rewards/math_expr.h"

namespace prism::rewards::detail {
namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

bool is_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string trim(std::string_view s) {
  std::size_t a = 0, b = s.size();
  while (a < b && is_space(s[a])) ++a;
  while (b > a && is_space(s[b - 1])) --b;
  return std::string(s.substr(a, b - a));
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Removes `\cmd` when it is a whole command (not a prefix of a longer name: \left vs \leftarrow).
void remove_command(std::string& s, std::string_view cmd, std::string_view with = "") {
  std::size_t pos = 0;
  while ((pos = s.find(cmd, pos)) != std::string::npos) {
    std::size_t end = pos + cmd.size();
    if (end < s.size() && is_alpha(s[end])) {
      pos = end;
      continue;
    }
    s.replace(pos, cmd.size(), with);
    pos += with.size();
  }
}

// Index of the brace matching the one at `open`, or npos.
std::size_t match_brace(const std::string& s, std::size_t open) {
  int depth = 0;
  for (std::size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i;
  }
  return std::string::npos;
}

// Unit words dropped after a number ("5 cm", "\text{ inches}^2"). Only multi-letter words: a
// single letter is far more often a variable than a unit.
constexpr std::array<std::string_view, 62> kUnits = {
    "cm",      "mm",    "km",     "meter",   "meters", "metre",  "metres", "inch",   "inches", "foot",    "feet",
    "ft",      "yard",  "yards",  "mile",    "miles",  "mph",    "hour",   "hours",  "hr",     "hrs",     "minute",
    "minutes", "min",   "second", "seconds", "sec",    "day",    "days",   "week",   "weeks",  "month",   "months",
    "year",    "years", "dollar", "dollars", "cent",   "cents",  "unit",   "units",  "degree", "degrees", "pound",
    "pounds",  "lb",    "lbs",    "kg",      "gram",   "grams",  "liter",  "liters", "litre",  "litres",  "gallon",
    "gallons", "ounce", "ounces", "oz",      "sq",     "square", "cubic"};

bool is_unit_text(std::string_view word) {
  std::string w = lower(trim(word));
  if (w.empty()) return false;
  // every word of the phrase must be a unit ("square feet", "cubic inches")
  std::size_t i = 0;
  bool any = false;
  while (i < w.size()) {
    while (i < w.size() && (w[i] == ' ' || w[i] == '.')) ++i;
    std::size_t j = i;
    while (j < w.size() && w[j] != ' ' && w[j] != '.') ++j;
    if (j > i) {
      std::string_view part(w.data() + i, j - i);
      if (std::find(kUnits.begin(), kUnits.end(), part) == kUnits.end()) return false;
      any = true;
    }
    i = j;
  }
  return any;
}

// \text{...}-like commands: units after a value are dropped, "and"/"or" become commas, other
// content is kept (a word answer such as \text{Monday}).
void unwrap_text_commands(std::string& s) {
  static constexpr std::array<std::string_view, 12> kTextCmds = {
      "\\text",   "\\textbf", "\\textit",     "\\textrm",       "\\mathrm", "\\mathbf",
      "\\mathit", "\\mbox",   "\\textnormal", "\\operatorname", "\\mathsf", "\\texttt"};
  for (int guard = 0; guard < 64; ++guard) {
    std::size_t best = std::string::npos, best_len = 0;
    for (auto cmd : kTextCmds) {
      std::size_t pos = 0;
      while ((pos = s.find(cmd, pos)) != std::string::npos) {
        std::size_t end = pos + cmd.size();
        std::size_t k = end;
        while (k < s.size() && s[k] == ' ') ++k;
        if (k < s.size() && s[k] == '{' && (end >= s.size() || !is_alpha(s[end]))) {
          if (best == std::string::npos || pos > best) {  // innermost-last first
            best = pos;
            best_len = cmd.size();
          }
          break;
        }
        pos = end;
      }
    }
    if (best == std::string::npos) return;
    std::size_t open = best + best_len;
    while (s[open] == ' ') ++open;
    std::size_t close = match_brace(s, open);
    if (close == std::string::npos) return;
    std::string content = s.substr(open + 1, close - open - 1);
    std::string t = lower(trim(content));
    std::string before = trim(s.substr(0, best));
    std::string repl;
    if (t == "and" || t == "or" || t == ",") {
      repl = ",";
    } else if (!before.empty() && is_unit_text(content)) {
      repl = "";
      // a unit's power: \text{ cm}^2
      std::size_t k = close + 1;
      if (k + 1 < s.size() && s[k] == '^') {
        if (is_digit(s[k + 1])) {
          close = k + 1;
        } else if (s[k + 1] == '{') {
          std::size_t c2 = match_brace(s, k + 1);
          if (c2 != std::string::npos) close = c2;
        }
      }
    } else {
      repl = " " + content + " ";
    }
    s.replace(best, close + 1 - best, repl);
  }
}

// "1,234,567" (only when the whole answer is one such number, as latex2sympy2_extended does).
void drop_thousands_separators(std::string& s) {
  std::string t = trim(s);
  std::size_t i = 0;
  if (i < t.size() && t[i] == '-') ++i;
  std::size_t start = i;
  while (i < t.size() && is_digit(t[i])) ++i;
  if (i == start || i - start > 3 || i >= t.size() || t[i] != ',') return;
  bool grouped = false;
  while (i < t.size() && t[i] == ',') {
    if (i + 3 >= t.size() || !is_digit(t[i + 1]) || !is_digit(t[i + 2]) || !is_digit(t[i + 3])) return;
    i += 4;
    grouped = true;
    if (i < t.size() && is_digit(t[i])) return;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (i >= t.size() || !is_digit(t[i])) return;
    while (i < t.size() && is_digit(t[i])) ++i;
  }
  if (i != t.size() || !grouped) return;
  t.erase(std::remove(t.begin(), t.end(), ','), t.end());
  s = t;
}

// Drops a trailing unit word after a number or a closing brace: "12 cm", "5\sqrt{2} inches".
void drop_trailing_unit(std::string& s) {
  for (int pass = 0; pass < 2; ++pass) {
    std::string t = trim(s);
    std::size_t j = t.size();
    while (j > 0 && (is_alpha(t[j - 1]) || t[j - 1] == ' ' || t[j - 1] == '.')) --j;
    if (j == 0 || j == t.size()) return;
    char prev = t[j - 1];
    if (!(is_digit(prev) || prev == '}' || prev == ')')) return;
    // a command before the word (\pi, \infty) is part of the math, not a unit
    std::string tail = t.substr(j);
    if (!is_unit_text(tail)) return;
    if (tail.find_first_not_of(' ') != 0 && !is_digit(prev) && prev != '}') return;
    s = trim(t.substr(0, j));
  }
}

}  // namespace

std::string normalize_answer(std::string_view raw) {
  std::string s(raw);
  // Unicode spellings that models produce.
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 14> kUnicode = {{
      {"\u2212", "-"},
      {"\u2013", "-"},
      {"\u00d7", "\\times "},
      {"\u00f7", "\\div "},
      {"\u03c0", "\\pi "},
      {"\u221e", "\\infty "},
      {"\u2264", "\\le "},
      {"\u2265", "\\ge "},
      {"\u2260", "\\ne "},
      {"\u221a", "\\sqrt"},
      {"\u00b0", "^\\circ"},
      {"\u00b7", "\\cdot "},
      {"\u222a", "\\cup "},
      {"\u00a0", " "},
  }};
  for (const auto& [from, to] : kUnicode) replace_all(s, from, to);
  for (auto& c : s)
    if (c == '\n' || c == '\t' || c == '\r' || c == '~') c = ' ';

  // Delimiters and spacing commands. "\\\\" (a matrix row break) is protected from the "\\ " rule.
  replace_all(s, "\\\\", "\x03");
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  replace_all(s, "\\(", "");
  replace_all(s, "\\)", "");
  replace_all(s, "\\[", "");
  replace_all(s, "\\]", "");
  replace_all(s, "\\!", "");
  replace_all(s, "\\,", "");
  replace_all(s, "\\;", " ");
  replace_all(s, "\\:", " ");
  replace_all(s, "\\ ", " ");
  replace_all(s, "{,}", "");
  remove_command(s, "\\displaystyle");
  remove_command(s, "\\quad", " ");
  remove_command(s, "\\qquad", " ");
  remove_command(s, "\\limits");
  replace_all(s, "\\left.", "");
  replace_all(s, "\\right.", "");
  remove_command(s, "\\left");
  remove_command(s, "\\right");
  for (auto cmd : {"\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\big", "\\Big"}) remove_command(s, cmd);
  remove_command(s, "\\dfrac", "\\frac");
  remove_command(s, "\\tfrac", "\\frac");
  remove_command(s, "\\cfrac", "\\frac");
  remove_command(s, "\\dbinom", "\\binom");
  remove_command(s, "\\tbinom", "\\binom");
  remove_command(s, "\\lt", "<");
  remove_command(s, "\\gt", ">");
  remove_command(s, "\\leqslant", "\\le");
  remove_command(s, "\\geqslant", "\\ge");
  remove_command(s, "\\leq", "\\le");
  remove_command(s, "\\geq", "\\ge");
  remove_command(s, "\\neq", "\\ne");
  remove_command(s, "\\varnothing", "\\emptyset");
  remove_command(s, "\\infinity", "\\infty");

  // Degrees and percent.
  replace_all(s, "^{\\circ}", "");
  replace_all(s, "^\\circ", "");
  replace_all(s, "{}^\\circ", "");
  remove_command(s, "\\circ");
  remove_command(s, "\\degree");
  replace_all(s, "\\%", "%");
  replace_all(s, "\\text{percent}", "%");
  replace_all(s, " percent", "%");

  unwrap_text_commands(s);
  replace_all(s, "\\{", "\x01");  // protect set braces from the next rule
  replace_all(s, "\\}", "\x02");
  replace_all(s, "{}", "");
  replace_all(s, "\x01", "\\{");
  replace_all(s, "\x02", "\\}");

  // "x \in [1, 2]" is the set itself.
  if (auto pos = s.find("\\in"); pos != std::string::npos && (pos + 3 >= s.size() || !is_alpha(s[pos + 3]))) {
    std::string lhs = trim(s.substr(0, pos));
    if (!lhs.empty() && lhs.size() <= 3) s = s.substr(pos + 3);
  }
  // " and " / " or " between listed values.
  replace_all(s, " and ", ",");
  replace_all(s, " or ", ",");

  s = trim(s);
  // Trailing punctuation (the sentence's period) and a leading '+'.
  while (!s.empty() && (s.back() == '.' || s.back() == ',' || s.back() == ';' || s.back() == ' ')) {
    if (s.back() == '.' && s.size() >= 2 && s[s.size() - 2] == '\\') break;
    s.pop_back();
  }
  drop_trailing_unit(s);
  drop_thousands_separators(s);
  replace_all(s, "\x03", "\\\\");
  // collapse runs of spaces
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace prism::rewards::detail
