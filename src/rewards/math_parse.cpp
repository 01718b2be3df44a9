// Recursive-descent parser for the LaTeX subset final answers use: numbers, variables, + - * / ^,
// \frac \sqrt \pi \infty, functions, mixed numbers, percents, tuples, sets, intervals, unions,
// matrices, relations and \pm. Anything else makes parse_answer return nullptr (the caller then
// compares the normalised strings), so an unknown construct can never be scored as equal to a
// different answer.
#include <cctype>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rewards/math_expr.h"

namespace prism::rewards::detail {
namespace {

constexpr std::size_t kMaxLength = 2000;  // longer "answers" are not answers
constexpr int kMaxDepth = 64;

struct Tok {
  enum Type { kNum, kLetter, kCmd, kPunct, kEnd } type = kEnd;
  std::string text;
};

struct ParseFail {};

bool is_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

std::vector<Tok> tokenize(std::string_view s) {
  std::vector<Tok> out;
  std::size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ') {
      ++i;
      continue;
    }
    if (is_digit(c) || (c == '.' && i + 1 < s.size() && is_digit(s[i + 1]))) {
      std::size_t j = i;
      while (j < s.size() && is_digit(s[j])) ++j;
      if (j < s.size() && s[j] == '.' && j + 1 < s.size() && is_digit(s[j + 1])) {
        ++j;
        while (j < s.size() && is_digit(s[j])) ++j;
      } else if (j < s.size() && s[j] == '.' && (j + 1 == s.size() || !is_digit(s[j + 1])) && j > i) {
        ++j;  // "5." is a number
      }
      // scientific notation written by programs: 1.5e-3, 2E5
      if (j + 1 < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        std::size_t k = j + 1;
        if (k < s.size() && (s[k] == '-' || s[k] == '+')) ++k;
        if (k < s.size() && is_digit(s[k])) {
          while (k < s.size() && is_digit(s[k])) ++k;
          j = k;
        }
      }
      out.push_back({Tok::kNum, std::string(s.substr(i, j - i))});
      i = j;
      continue;
    }
    if (is_alpha(c)) {
      out.push_back({Tok::kLetter, std::string(1, c)});
      ++i;
      continue;
    }
    if (c == '\\') {
      std::size_t j = i + 1;
      if (j < s.size() && is_alpha(s[j])) {
        while (j < s.size() && is_alpha(s[j])) ++j;
        out.push_back({Tok::kCmd, std::string(s.substr(i + 1, j - i - 1))});
      } else if (j < s.size()) {
        // \{ \} \\ \|
        out.push_back({Tok::kPunct, std::string(s.substr(i, 2))});
        ++j;
      } else {
        throw ParseFail{};
      }
      i = j;
      continue;
    }
    if (c == '<' || c == '>' || c == '!') {
      if (i + 1 < s.size() && s[i + 1] == '=') {
        out.push_back({Tok::kPunct, std::string(s.substr(i, 2))});
        i += 2;
        continue;
      }
    }
    if (std::strchr("+-*/^_()[]{},;=<>!|%&'", c) == nullptr) throw ParseFail{};
    out.push_back({Tok::kPunct, std::string(1, c)});
    ++i;
  }
  out.push_back({Tok::kEnd, ""});
  return out;
}

NodePtr make(Node::Kind k, std::vector<NodePtr> kids = {}, std::string text = {}) {
  auto n = std::make_shared<Node>();
  n->kind = k;
  n->kids = std::move(kids);
  n->text = std::move(text);
  return n;
}

// A decimal literal as an exact rational "p/q".
NodePtr number(const std::string& lit) {
  auto n = std::make_shared<Node>();
  n->kind = Node::Kind::kNum;
  std::string mant = lit;
  long exp10 = 0;
  if (auto e = lit.find_first_of("eE"); e != std::string::npos) {
    mant = lit.substr(0, e);
    exp10 = std::stol(lit.substr(e + 1));
    n->is_float = true;
    if (exp10 > 400 || exp10 < -400) throw ParseFail{};
  }
  if (!mant.empty() && mant.back() == '.') mant.pop_back();
  std::string digits;
  if (auto dot = mant.find('.'); dot != std::string::npos) {
    n->is_float = true;
    exp10 -= static_cast<long>(mant.size() - dot - 1);
    digits = mant.substr(0, dot) + mant.substr(dot + 1);
  } else {
    digits = mant;
  }
  std::size_t nz = digits.find_first_not_of('0');
  digits = nz == std::string::npos ? "0" : digits.substr(nz);
  if (digits == "0") {
    n->text = "0";
  } else if (exp10 >= 0) {
    n->text = digits + std::string(static_cast<std::size_t>(exp10), '0');
  } else {
    n->text = digits + "/1" + std::string(static_cast<std::size_t>(-exp10), '0');
  }
  return n;
}

bool is_integer_literal(const Node& n) {
  return n.kind == Node::Kind::kNum && !n.is_float && n.text.find('/') == std::string::npos;
}

const std::vector<std::string_view>& function_names() {
  static const std::vector<std::string_view> k = {"sin",    "cos",  "tan",  "sec",  "csc", "cot", "arcsin", "arccos",
                                                  "arctan", "sinh", "cosh", "tanh", "log", "ln",  "exp",    "lg"};
  return k;
}

const std::vector<std::string_view>& greek() {
  static const std::vector<std::string_view> k = {
      "alpha",    "beta",    "gamma", "delta",  "epsilon", "varepsilon", "zeta",  "eta",   "theta",
      "vartheta", "iota",    "kappa", "lambda", "mu",      "nu",         "xi",    "rho",   "sigma",
      "tau",      "upsilon", "phi",   "varphi", "chi",     "psi",        "omega", "Gamma", "Delta",
      "Theta",    "Lambda",  "Xi",    "Sigma",  "Phi",     "Psi",        "Omega"};
  return k;
}

class Parser {
 public:
  explicit Parser(std::vector<Tok> toks) : t_(std::move(toks)) {}

  NodePtr parse_top() {
    auto items = parse_list_until("");
    expect_end();
    if (items.size() == 1) return items[0];
    return make(Node::Kind::kSet, std::move(items));
  }

 private:
  std::vector<Tok> t_;
  std::size_t p_ = 0;
  int depth_ = 0;

  struct DepthGuard {
    int& d;
    explicit DepthGuard(int& d) : d(d) {
      if (++d > kMaxDepth) throw ParseFail{};
    }
    ~DepthGuard() { --d; }
  };

  const Tok& peek(std::size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool at(std::string_view punct) const { return peek().type == Tok::kPunct && peek().text == punct; }
  bool at_cmd(std::string_view cmd) const { return peek().type == Tok::kCmd && peek().text == cmd; }
  Tok next() {
    Tok k = peek();
    if (p_ < t_.size() - 1) ++p_;
    return k;
  }
  void expect(std::string_view punct) {
    if (!at(punct)) throw ParseFail{};
    next();
  }
  void expect_end() {
    if (peek().type != Tok::kEnd) throw ParseFail{};
  }

  // Comma/semicolon separated items up to (not including) the closer; "" = end of input.
  std::vector<NodePtr> parse_list_until(std::string_view closer) {
    std::vector<NodePtr> items;
    auto at_close = [&] {
      if (closer.empty()) return peek().type == Tok::kEnd;
      if (closer == "\\}") return at("\\}");
      return at(closer) || (closer == ")" && at("]")) || (closer == "]" && at(")"));
    };
    if (at_close()) return items;
    items.push_back(parse_relation());
    while (at(",") || at(";")) {
      next();
      if (at_close()) break;  // trailing comma
      items.push_back(parse_relation());
    }
    return items;
  }

  static const char* rel_op(const Tok& k) {
    if (k.type == Tok::kPunct) {
      if (k.text == "=") return "=";
      if (k.text == "<") return "<";
      if (k.text == ">") return ">";
      if (k.text == "<=") return "<=";
      if (k.text == ">=") return ">=";
      if (k.text == "!=") return "!=";
    } else if (k.type == Tok::kCmd) {
      if (k.text == "le") return "<=";
      if (k.text == "ge") return ">=";
      if (k.text == "ne") return "!=";
      if (k.text == "approx" || k.text == "equiv") return "=";
    }
    return nullptr;
  }

  NodePtr parse_relation() {
    DepthGuard g(depth_);
    auto first = parse_union();
    if (!rel_op(peek())) return first;
    auto rel = std::make_shared<Node>();
    rel->kind = Node::Kind::kRel;
    rel->kids.push_back(first);
    while (const char* op = rel_op(peek())) {
      next();
      rel->ops.emplace_back(op);
      rel->kids.push_back(parse_union());
    }
    return rel;
  }

  NodePtr parse_union() {
    auto first = parse_additive();
    if (!at_cmd("cup")) return first;
    std::vector<NodePtr> parts{first};
    while (at_cmd("cup")) {
      next();
      parts.push_back(parse_additive());
    }
    return make(Node::Kind::kUnion, std::move(parts));
  }

  NodePtr parse_additive() {
    DepthGuard g(depth_);
    NodePtr lhs;
    if (at("-")) {
      next();
      lhs = make(Node::Kind::kNeg, {parse_term()});
    } else if (at("+")) {
      next();
      lhs = parse_term();
    } else if (at_cmd("pm")) {
      next();
      auto t = parse_term();
      return make(Node::Kind::kPm, {make(Node::Kind::kNum, {}, "0"), t});
    } else {
      lhs = parse_term();
    }
    std::vector<NodePtr> terms{lhs};
    NodePtr pm;
    while (at("+") || at("-") || at_cmd("pm") || at_cmd("mp")) {
      bool minus = at("-");
      bool is_pm = at_cmd("pm") || at_cmd("mp");
      next();
      auto t = parse_term();
      if (is_pm) {
        if (pm) throw ParseFail{};
        pm = t;
      } else {
        terms.push_back(minus ? make(Node::Kind::kNeg, {t}) : t);
      }
    }
    NodePtr sum = terms.size() == 1 ? terms[0] : make(Node::Kind::kAdd, std::move(terms));
    if (pm) return make(Node::Kind::kPm, {sum, pm});
    return sum;
  }

  bool starts_primary() const {
    const Tok& k = peek();
    if (k.type == Tok::kNum || k.type == Tok::kLetter) return true;
    if (k.type == Tok::kCmd)
      return k.text != "cdot" && k.text != "times" && k.text != "div" && k.text != "cup" && k.text != "pm" &&
             k.text != "mp" && !rel_op(k) && k.text != "end" && k.text != "in";
    return k.type == Tok::kPunct && (k.text == "(" || k.text == "{" || k.text == "\\{");
  }

  NodePtr parse_term() {
    DepthGuard g(depth_);
    std::vector<NodePtr> factors{parse_unary()};
    while (true) {
      if (at("*") || at_cmd("cdot") || at_cmd("times")) {
        next();
        factors.push_back(parse_unary());
      } else if (at("/") || at_cmd("div")) {
        next();
        auto den = parse_unary();
        NodePtr num = factors.size() == 1 ? factors[0] : make(Node::Kind::kMul, std::move(factors));
        factors = {make(Node::Kind::kDiv, {num, den})};
      } else if (starts_primary()) {
        auto f = parse_postfix();
        // A mixed number: 2\frac{1}{2} is 2 + 1/2 (latex2sympy2_extended does the same).
        const Node& prev = *factors.back();
        if (factors.size() == 1 && is_integer_literal(prev) && f->kind == Node::Kind::kDiv && f->text == "frac" &&
            is_integer_literal(*f->kids[0]) && is_integer_literal(*f->kids[1])) {
          factors.back() = make(Node::Kind::kAdd, {factors.back(), f});
        } else {
          factors.push_back(f);
        }
      } else {
        break;
      }
    }
    if (factors.size() == 1) return factors[0];
    return make(Node::Kind::kMul, std::move(factors));
  }

  NodePtr parse_unary() {
    DepthGuard g(depth_);
    if (at("-")) {
      next();
      return make(Node::Kind::kNeg, {parse_unary()});
    }
    if (at("+")) {
      next();
      return parse_unary();
    }
    return parse_postfix();
  }

  // A single-token argument (\frac12, x^2, \sqrt3): one digit of a number, a letter, a command, or a group.
  NodePtr parse_arg() {
    DepthGuard g(depth_);
    if (at("{")) {
      next();
      auto e = parse_relation();
      expect("}");
      return e;
    }
    Tok& k = t_[p_];
    if (k.type == Tok::kNum) {
      if (k.text.size() > 1 && k.text.find_first_of(".eE") == std::string::npos) {
        std::string first(1, k.text[0]);
        k.text.erase(0, 1);
        return number(first);
      }
      next();
      return number(k.text);
    }
    if (k.type == Tok::kLetter || k.type == Tok::kCmd) return parse_primary();
    if (at("-")) {  // x^-1
      next();
      return make(Node::Kind::kNeg, {parse_arg()});
    }
    throw ParseFail{};
  }

  NodePtr parse_postfix() {
    DepthGuard g(depth_);
    auto base = parse_primary();
    while (true) {
      if (at("^")) {
        next();
        auto e = parse_arg();
        base = make(Node::Kind::kPow, {base, e});
      } else if (at("!")) {
        next();
        base = make(Node::Kind::kFunc, {base}, "fact");
      } else if (at("%")) {
        next();
        base = make(Node::Kind::kPct, {base});
      } else if (at("'")) {
        throw ParseFail{};
      } else {
        break;
      }
    }
    return base;
  }

  // Closing punctuation of an interval or tuple opened by `open`.
  NodePtr parse_bracketed(bool open_square) {
    auto items = parse_list_until(open_square ? "]" : ")");
    bool close_square = at("]");
    if (!at(")") && !at("]")) throw ParseFail{};
    next();
    if (items.empty()) return make(Node::Kind::kTuple);
    if (items.size() == 1) {
      if (open_square != close_square) throw ParseFail{};
      return items[0];  // a parenthesised expression
    }
    if (items.size() == 2 && (open_square || close_square)) {
      auto n = make(Node::Kind::kInterval, std::move(items));
      auto m = std::const_pointer_cast<Node>(n);
      m->lo_closed = open_square;
      m->hi_closed = close_square;
      return n;
    }
    if (open_square != close_square) throw ParseFail{};
    return make(Node::Kind::kTuple, std::move(items));
  }

  NodePtr parse_matrix(const std::string& env) {
    // \begin{pmatrix} a & b \\ c & d \end{pmatrix}
    auto m = std::make_shared<Node>();
    m->kind = Node::Kind::kMatrix;
    std::vector<std::vector<NodePtr>> rows(1);
    if (env == "array") {  // \begin{array}{cc}
      expect("{");
      while (!at("}") && peek().type != Tok::kEnd) next();
      expect("}");
    }
    while (!at_cmd("end")) {
      if (peek().type == Tok::kEnd) throw ParseFail{};
      if (at("&")) {
        next();
        continue;
      }
      if (at("\\\\")) {
        next();
        rows.emplace_back();
        continue;
      }
      rows.back().push_back(parse_additive());
    }
    next();
    expect("{");
    while (!at("}") && peek().type != Tok::kEnd) next();
    expect("}");
    if (!rows.empty() && rows.back().empty()) rows.pop_back();
    if (rows.empty()) throw ParseFail{};
    m->rows = static_cast<int>(rows.size());
    m->cols = static_cast<int>(rows[0].size());
    for (auto& r : rows) {
      if (static_cast<int>(r.size()) != m->cols) throw ParseFail{};
      for (auto& e : r) m->kids.push_back(e);
    }
    return m;
  }

  NodePtr parse_primary() {
    DepthGuard g(depth_);
    Tok k = peek();
    switch (k.type) {
      case Tok::kNum:
        next();
        return number(k.text);
      case Tok::kLetter: {
        next();
        std::string name = k.text;
        if (at("_")) {  // x_1, a_{n}
          next();
          auto sub = parse_arg();
          name += "_" + to_string(*sub);
          return make(Node::Kind::kSym, {}, name);
        }
        if (name == "e") return make(Node::Kind::kConst, {}, "e");
        if (name == "i") return make(Node::Kind::kConst, {}, "i");
        return make(Node::Kind::kSym, {}, name);
      }
      case Tok::kCmd:
        return parse_command();
      case Tok::kPunct:
        break;
      case Tok::kEnd:
        throw ParseFail{};
    }
    if (at("(") || at("[")) {
      bool sq = at("[");
      next();
      return parse_bracketed(sq);
    }
    if (at("{")) {
      next();
      auto items = parse_list_until("}");
      expect("}");
      if (items.size() != 1) throw ParseFail{};
      return items[0];
    }
    if (at("\\{")) {
      next();
      auto items = parse_list_until("\\}");
      expect("\\}");
      return make(Node::Kind::kSet, std::move(items));
    }
    if (at("|")) {
      next();
      auto e = parse_additive();
      expect("|");
      return make(Node::Kind::kFunc, {e}, "abs");
    }
    throw ParseFail{};
  }

  NodePtr parse_command() {
    Tok k = next();
    const std::string& c = k.text;
    if (c == "pi") return make(Node::Kind::kConst, {}, "pi");
    if (c == "infty") return make(Node::Kind::kConst, {}, "inf");
    if (c == "emptyset") return make(Node::Kind::kSet);
    if (c == "frac") {
      auto a = parse_arg();
      auto b = parse_arg();
      auto n = make(Node::Kind::kDiv, {a, b}, "frac");
      return n;
    }
    if (c == "binom") {
      auto a = parse_arg();
      auto b = parse_arg();
      return make(Node::Kind::kFunc, {a, b}, "binom");
    }
    if (c == "sqrt") {
      NodePtr index;
      if (at("[")) {
        next();
        index = parse_additive();
        expect("]");
      }
      auto r = parse_arg();
      if (index) return make(Node::Kind::kFunc, {r, index}, "sqrt");
      return make(Node::Kind::kFunc, {r}, "sqrt");
    }
    if (c == "lfloor" || c == "lceil") {
      auto e = parse_additive();
      if (!at_cmd(c == "lfloor" ? "rfloor" : "rceil")) throw ParseFail{};
      next();
      return make(Node::Kind::kFunc, {e}, c == "lfloor" ? "floor" : "ceil");
    }
    if (c == "begin") {
      expect("{");
      std::string env;
      while (peek().type == Tok::kLetter) env += next().text;
      expect("}");
      if (env != "pmatrix" && env != "bmatrix" && env != "matrix" && env != "vmatrix" && env != "array" &&
          env != "Bmatrix")
        throw ParseFail{};
      return parse_matrix(env);
    }
    for (auto g : greek())
      if (c == g) {
        std::string name(c);
        if (at("_")) {
          next();
          name += "_" + to_string(*parse_arg());
        }
        return make(Node::Kind::kSym, {}, name);
      }
    for (auto f : function_names()) {
      if (c != f) continue;
      std::string name = c == "lg" ? "log" : c;
      NodePtr base;
      if (name == "log" && at("_")) {
        next();
        base = parse_arg();
      }
      NodePtr power;
      if (at("^")) {
        next();
        power = parse_arg();
      }
      NodePtr arg;
      if (at("(")) {
        next();
        arg = parse_additive();
        expect(")");
      } else {
        arg = parse_postfix();  // \sin x, \log 8
      }
      auto fn = base ? make(Node::Kind::kFunc, {arg, base}, name) : make(Node::Kind::kFunc, {arg}, name);
      if (power) return make(Node::Kind::kPow, {fn, power});
      return fn;
    }
    throw ParseFail{};
  }
};

}  // namespace

NodePtr parse_answer(std::string_view normalized) {
  if (normalized.empty() || normalized.size() > kMaxLength) return nullptr;
  // A word answer ("Monday", "no solution"): letters and spaces with a run of 2+ letters that is
  // not a LaTeX command. Compared as lower-cased text.
  bool words = true, has_run = false;
  int run = 0;
  for (char c : normalized) {
    if (is_alpha(c)) {
      if (++run >= 2) has_run = true;
    } else if (c == ' ' || c == '-' || c == '\'') {
      run = 0;
    } else {
      words = false;
      break;
    }
  }
  if (words && has_run) {
    std::string t;
    for (char c : normalized) t.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    return make(Node::Kind::kText, {}, t);
  }
  try {
    Parser p(tokenize(normalized));
    return p.parse_top();
  } catch (const ParseFail&) {
    return nullptr;
  } catch (const std::exception&) {  // std::stol on absurd exponents
    return nullptr;
  }
}

}  // namespace prism::rewards::detail
