// Multiple-choice letter extraction. The final answer region is the text after the last
// "answer" keyword (or the last \boxed{}), cut at the end of its sentence; a lone letter there is
// the choice. Lower-case letters count only where they cannot be English words ("(c)", "c)", or a
// region that is just the letter), so "the answer is a bit unclear" is not choice A.
#include <cctype>
#include <set>
#include <string>

#include "prism/core/error.h"
#include "prism/rewards/mc.h"
#include "rewards/extract.h"

namespace prism::rewards {
namespace {

bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// Standalone letters of `region` that can be choices. A lower-case one counts only in "(c)" / "c)",
// or as the region's first token when `lenient_single` ("Answer: c").
std::set<char> letters_in(std::string_view region, int n, bool lenient_single) {
  std::set<char> out;
  std::string r;
  for (char c : region)
    if (c != '*' && c != '$') r.push_back(c);  // markdown bold, math delimiters
  std::string t = detail::trim(r);
  for (std::size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (!std::isalpha(static_cast<unsigned char>(c))) continue;
    bool left_ok = i == 0 || !is_alnum(t[i - 1]);
    bool right_ok = i + 1 >= t.size() || !is_alnum(t[i + 1]);
    if (!left_ok || !right_ok) continue;
    if (i > 0 && t[i - 1] == '\\') continue;  // a LaTeX command letter
    char up = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (up < 'A' || up >= 'A' + n) {
      if (std::isupper(static_cast<unsigned char>(c)) && up >= 'A' && up <= 'J') out.insert(up);  // out of range
      continue;
    }
    if (std::islower(static_cast<unsigned char>(c))) {
      bool paren = (i > 0 && t[i - 1] == '(') || (i + 1 < t.size() && t[i + 1] == ')');
      bool alone = t.size() == 1 || (lenient_single && i == 0 && i + 1 < t.size() && t[i + 1] != ' ');
      if (!paren && !alone) continue;
    }
    out.insert(up);
  }
  return out;
}

std::string_view sentence(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && i > 0) return s.substr(0, i);
    if (s[i] == '.' && (i + 1 == s.size() || s[i + 1] == ' ' || s[i + 1] == '\n')) return s.substr(0, i);
  }
  return s;
}

McChoice decide(const std::set<char>& letters, int n) {
  McChoice c;
  if (letters.empty()) {
    c.reason = "no_answer";
  } else if (letters.size() > 1) {
    c.reason = "multiple_choices";
  } else if (*letters.begin() >= 'A' + n) {
    c.reason = "out_of_range";
  } else {
    c.letter = *letters.begin();
  }
  return c;
}

}  // namespace

McChoice extract_choice(std::string_view completion, int num_choices) {
  PRISM_CHECK(num_choices >= 1 && num_choices <= 10, "rewards: mc num_choices must be in 1..10 (found ", num_choices,
              ")");
  std::string_view text = detail::after_think(completion);
  if (auto b = detail::last_boxed(text)) {
    std::string content = *b;
    for (std::string_view cmd : {"\\text{", "\\textbf{", "\\mathrm{"}) {
      if (content.rfind(cmd, 0) == 0 && content.back() == '}')
        content = content.substr(cmd.size(), content.size() - cmd.size() - 1);
    }
    return decide(letters_in(content, num_choices, true), num_choices);
  }
  std::size_t pos = detail::rfind_nocase(text, "answer");
  if (pos != std::string_view::npos) {
    std::string_view rest = text.substr(pos + 6);
    // "answer is", "answer:", "answer would be"
    std::size_t k = 0;
    while (k < rest.size() && (rest[k] == ' ' || rest[k] == ':' || rest[k] == '*')) ++k;
    for (std::string_view w : {"is", "would be", "should be", "="}) {
      if (rest.substr(k, w.size()) == w) {
        k += w.size();
        break;
      }
    }
    while (k < rest.size() && (rest[k] == ' ' || rest[k] == ':' || rest[k] == '*')) ++k;
    auto region = sentence(rest.substr(k));
    auto letters = letters_in(region, num_choices, true);
    if (!letters.empty()) return decide(letters, num_choices);
  }
  // No anchor: the last non-empty line, with the letter written as "(C)" / "C)" / "C." at its start.
  std::string t = detail::trim(text);
  auto nl = t.rfind('\n');
  std::string line = detail::trim(nl == std::string::npos ? std::string_view(t) : std::string_view(t).substr(nl + 1));
  std::set<char> found;
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (!std::isalpha(static_cast<unsigned char>(c))) continue;
    bool left_ok = i == 0 || !is_alnum(line[i - 1]);
    bool paren = (i > 0 && line[i - 1] == '(' && i + 1 < line.size() && line[i + 1] == ')') ||
                 (left_ok && i + 1 < line.size() && line[i + 1] == ')');
    if (!paren) continue;
    char up = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (up >= 'A' && up <= 'J') found.insert(up);
  }
  if (line.size() == 1 && std::isalpha(static_cast<unsigned char>(line[0])))
    found.insert(static_cast<char>(std::toupper(static_cast<unsigned char>(line[0]))));
  return decide(found, num_choices);
}

McVerifier::McVerifier(McOptions opts) : opts_(opts) {
  PRISM_CHECK(opts_.num_choices >= 1 && opts_.num_choices <= 10, "rewards: mc num_choices must be in 1..10 (found ",
              opts_.num_choices, ")");
}

Verdict McVerifier::verify(const Sample& s) {
  Verdict v;
  int n = s.choices.empty() ? opts_.num_choices : static_cast<int>(std::min<std::size_t>(s.choices.size(), 10));
  McChoice gold = extract_choice(s.answer, 10);
  if (!gold.letter) {
    // a bare gold letter ("C", "c")
    std::string g = detail::trim(s.answer);
    if (g.size() == 1 && std::isalpha(static_cast<unsigned char>(g[0])))
      gold.letter = static_cast<char>(std::toupper(static_cast<unsigned char>(g[0])));
  }
  if (!gold.letter) {
    v.reason = "no_gold";
    return v;
  }
  McChoice c = extract_choice(s.completion, n);
  if (!c.letter) {
    v.reason = c.reason;
    return v;
  }
  v.extracted = std::string(1, *c.letter);
  v.correct = *c.letter == *gold.letter;
  v.reward = v.correct ? 1.0 : 0.0;
  v.reason = v.correct ? "equal" : "wrong_choice";
  return v;
}

}  // namespace prism::rewards
