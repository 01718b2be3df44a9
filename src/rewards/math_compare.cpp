// The comparison rules (which structures match which) and the exact-rational fast path. Only
// questions that need algebra reach the SymbolicBackend; in the main process that backend throws
// NeedsSymbolic and the pair is re-run in a GiNaC worker (math_pool.cpp).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "rewards/math_expr.h"

namespace prism::rewards::detail {
namespace {

using I128 = __int128;
using K = Node::Kind;

I128 abs128(I128 x) { return x < 0 ? -x : x; }
I128 gcd128(I128 a, I128 b) {
  a = abs128(a);
  b = abs128(b);
  while (b != 0) {
    I128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

Rational bad() {
  Rational r;
  r.ok = false;
  return r;
}

}  // namespace

Rational Rational::of(I128 n, I128 d) {
  if (d == 0) return bad();
  if (d < 0) {
    n = -n;
    d = -d;
  }
  I128 g = gcd128(n, d);
  if (g > 1) {
    n /= g;
    d /= g;
  }
  Rational r;
  r.num = n;
  r.den = d;
  return r;
}

Rational Rational::operator+(const Rational& o) const {
  if (!ok || !o.ok) return bad();
  I128 a, b, c;
  if (__builtin_mul_overflow(num, o.den, &a) || __builtin_mul_overflow(o.num, den, &b) ||
      __builtin_add_overflow(a, b, &a) || __builtin_mul_overflow(den, o.den, &c))
    return bad();
  return of(a, c);
}
Rational Rational::neg() const {
  if (!ok) return bad();
  return of(-num, den);
}
Rational Rational::operator-(const Rational& o) const { return *this + o.neg(); }
Rational Rational::operator*(const Rational& o) const {
  if (!ok || !o.ok) return bad();
  I128 g1 = gcd128(num, o.den), g2 = gcd128(o.num, den);
  if (g1 == 0) g1 = 1;
  if (g2 == 0) g2 = 1;
  I128 a, b;
  if (__builtin_mul_overflow(num / g1, o.num / g2, &a) || __builtin_mul_overflow(den / g2, o.den / g1, &b))
    return bad();
  return of(a, b);
}
Rational Rational::operator/(const Rational& o) const {
  if (!ok || !o.ok || o.num == 0) return bad();
  return *this * of(o.den, o.num);
}
double Rational::to_double() const { return static_cast<double>(num) / static_cast<double>(den); }

Rational Rational::round_to(int digits) const {
  if (!ok) return bad();
  I128 scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  I128 scaled;
  if (__builtin_mul_overflow(num, scale, &scaled)) return bad();
  I128 q = scaled / den, r = scaled % den;
  if (2 * abs128(r) >= den) q += (scaled < 0 ? -1 : 1);
  return of(q, scale);
}

std::string Rational::str() const {
  auto s128 = [](I128 v) {
    if (v == 0) return std::string("0");
    bool neg = v < 0;
    std::string s;
    while (v != 0) {
      int d = static_cast<int>(v % 10);
      s.push_back(static_cast<char>('0' + (d < 0 ? -d : d)));
      v /= 10;
    }
    if (neg) s.push_back('-');
    std::reverse(s.begin(), s.end());
    return s;
  };
  if (!ok) return "nan";
  return den == 1 ? s128(num) : s128(num) + "/" + s128(den);
}

namespace {

std::optional<I128> parse_int(const std::string& s) {
  if (s.empty() || s.size() > 36) return std::nullopt;  // 10^36 < 2^127
  I128 v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

std::optional<Rational> exact_value(const Node& n) {
  switch (n.kind) {
    case K::kNum: {
      auto slash = n.text.find('/');
      auto p = parse_int(n.text.substr(0, slash));
      auto q = slash == std::string::npos ? std::optional<I128>(1) : parse_int(n.text.substr(slash + 1));
      if (!p || !q) return std::nullopt;
      return Rational::of(*p, *q);
    }
    case K::kNeg: {
      auto v = exact_value(*n.kids[0]);
      if (!v) return std::nullopt;
      return v->neg();
    }
    case K::kAdd:
    case K::kMul: {
      Rational acc = Rational::of(n.kind == K::kAdd ? 0 : 1);
      for (const auto& k : n.kids) {
        auto v = exact_value(*k);
        if (!v) return std::nullopt;
        acc = n.kind == K::kAdd ? acc + *v : acc * *v;
        if (!acc.ok) return std::nullopt;
      }
      return acc;
    }
    case K::kDiv: {
      auto a = exact_value(*n.kids[0]);
      auto b = exact_value(*n.kids[1]);
      if (!a || !b || b->num == 0) return std::nullopt;
      auto r = *a / *b;
      if (!r.ok) return std::nullopt;
      return r;
    }
    case K::kPow: {
      auto b = exact_value(*n.kids[0]);
      auto e = exact_value(*n.kids[1]);
      if (!b || !e || !e->is_integer() || abs128(e->num) > 256) return std::nullopt;
      Rational acc = Rational::of(1);
      for (I128 i = 0; i < abs128(e->num); ++i) {
        acc = acc * *b;
        if (!acc.ok) return std::nullopt;
      }
      if (e->num < 0) {
        if (acc.num == 0) return std::nullopt;
        acc = Rational::of(1) / acc;
      }
      return acc;
    }
    case K::kPct: {
      auto v = exact_value(*n.kids[0]);
      if (!v) return std::nullopt;
      auto r = *v / Rational::of(100);
      if (!r.ok) return std::nullopt;
      return r;
    }
    default:
      return std::nullopt;
  }
}

std::string to_string(const Node& n) {
  auto join = [&](const char* sep) {
    std::string s;
    for (std::size_t i = 0; i < n.kids.size(); ++i) {
      if (i) s += sep;
      s += to_string(*n.kids[i]);
    }
    return s;
  };
  switch (n.kind) {
    case K::kNum:
      return n.is_float ? "f" + n.text : n.text;
    case K::kSym:
    case K::kConst:
      return n.text;
    case K::kText:
      return "\"" + n.text + "\"";
    case K::kAdd:
      return "(" + join("+") + ")";
    case K::kMul:
      return "(" + join("*") + ")";
    case K::kDiv:
      return "(" + join("/") + ")";
    case K::kNeg:
      return "(-" + to_string(*n.kids[0]) + ")";
    case K::kPow:
      return "(" + join("^") + ")";
    case K::kFunc:
      return n.text + "(" + join(",") + ")";
    case K::kPct:
      return "(" + to_string(*n.kids[0]) + "%)";
    case K::kTuple:
      return "tuple(" + join(",") + ")";
    case K::kSet:
      return "set(" + join(",") + ")";
    case K::kInterval:
      return std::string(n.lo_closed ? "[" : "(") + join(",") + (n.hi_closed ? "]" : ")");
    case K::kUnion:
      return "union(" + join(",") + ")";
    case K::kMatrix:
      return "matrix" + std::to_string(n.rows) + "x" + std::to_string(n.cols) + "(" + join(",") + ")";
    case K::kPm:
      return "pm(" + join(",") + ")";
    case K::kRel: {
      std::string s = "rel(" + to_string(*n.kids[0]);
      for (std::size_t i = 0; i < n.ops.size(); ++i) s += n.ops[i] + to_string(*n.kids[i + 1]);
      return s + ")";
    }
  }
  return "?";
}

namespace {

NodePtr mk(K k, std::vector<NodePtr> kids, std::string text = {}) {
  auto n = std::make_shared<Node>();
  n->kind = k;
  n->kids = std::move(kids);
  n->text = std::move(text);
  return n;
}

bool has_float(const Node& n) {
  if (n.kind == K::kNum && n.is_float) return true;
  for (const auto& k : n.kids)
    if (has_float(*k)) return true;
  return false;
}

bool has_kind(const Node& n, K kind) {
  if (n.kind == kind) return true;
  for (const auto& k : n.kids)
    if (has_kind(*k, kind)) return true;
  return false;
}

bool is_container(const Node& n) {
  return n.kind == K::kTuple || n.kind == K::kSet || n.kind == K::kInterval || n.kind == K::kUnion ||
         n.kind == K::kMatrix || n.kind == K::kPm;
}

bool is_assignment(const Node& n) {
  if (n.kind != K::kRel || n.kids[0]->kind != K::kSym) return false;
  return std::all_of(n.ops.begin(), n.ops.end(), [](const std::string& o) { return o == "="; });
}
bool is_equation(const Node& n) {
  return n.kind == K::kRel && std::all_of(n.ops.begin(), n.ops.end(), [](const std::string& o) { return o == "="; });
}

// "abc" as a product of letters (Math-Verify: $\text{abc}$ == $abc$).
std::optional<std::string> letters(const Node& n) {
  if (n.kind == K::kSym && n.text.size() == 1) return n.text;
  if (n.kind == K::kConst && (n.text == "e" || n.text == "i")) return n.text;
  if (n.kind == K::kMul) {
    std::string s;
    for (const auto& k : n.kids) {
      auto l = letters(*k);
      if (!l) return std::nullopt;
      s += *l;
    }
    return s;
  }
  return std::nullopt;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// \pm at the top of an answer is the set of its two values.
NodePtr expand_pm(const NodePtr& n) {
  if (n->kind != K::kPm) return n;
  const auto& a = n->kids[0];
  const auto& b = n->kids[1];
  return mk(K::kSet, {mk(K::kAdd, {a, b}), mk(K::kAdd, {a, mk(K::kNeg, {b})})});
}

// An inequality in one variable as an interval: x > 3 -> (3, inf); 1 <= x < 2 -> [1, 2).
NodePtr relation_as_interval(const Node& r) {
  auto inf = mk(K::kConst, {}, "inf");
  auto ninf = mk(K::kNeg, {inf});
  auto iv = [](NodePtr lo, NodePtr hi, bool lc, bool hc) {
    auto n = std::make_shared<Node>();
    n->kind = K::kInterval;
    n->kids = {std::move(lo), std::move(hi)};
    n->lo_closed = lc;
    n->hi_closed = hc;
    return NodePtr(n);
  };
  if (r.kids.size() == 2) {
    const auto& op = r.ops[0];
    bool var_left = r.kids[0]->kind == K::kSym, var_right = r.kids[1]->kind == K::kSym;
    if (var_left == var_right) return nullptr;
    const NodePtr& v = var_left ? r.kids[1] : r.kids[0];
    bool greater = (op == ">" || op == ">=") == var_left;  // variable greater than v
    bool closed = op == ">=" || op == "<=";
    if (op != "<" && op != ">" && op != "<=" && op != ">=") return nullptr;
    return greater ? iv(v, inf, closed, false) : iv(ninf, v, false, closed);
  }
  if (r.kids.size() == 3 && r.kids[1]->kind == K::kSym) {
    bool up = (r.ops[0] == "<" || r.ops[0] == "<=") && (r.ops[1] == "<" || r.ops[1] == "<=");
    bool down = (r.ops[0] == ">" || r.ops[0] == ">=") && (r.ops[1] == ">" || r.ops[1] == ">=");
    if (up) return iv(r.kids[0], r.kids[2], r.ops[0] == "<=", r.ops[1] == "<=");
    if (down) return iv(r.kids[2], r.kids[0], r.ops[1] == ">=", r.ops[0] == ">=");
  }
  return nullptr;
}

class Comparer {
 public:
  explicit Comparer(SymbolicBackend& b) : backend_(b) {}

  bool top(NodePtr g, NodePtr p) {
    g = expand_pm(g);
    p = expand_pm(p);
    // Follow the gold's shape: "x = 3" predicted for a bare gold is its right-hand side; an
    // assignment gold against a bare prediction compares the right-hand side.
    if (is_equation(*p) && !is_equation(*g) && g->kind != K::kRel) {
      p = p->kids.back();
    } else if (is_assignment(*g) && p->kind != K::kRel) {
      g = g->kids.back();
    }
    if (g->kind == K::kRel && (p->kind == K::kInterval || p->kind == K::kSet || p->kind == K::kUnion ||
                               (p->kind == K::kTuple && p->kids.size() == 2))) {
      if (auto iv = relation_as_interval(*g)) g = iv;
    }
    return eq(*g, *p);
  }

  bool eq(const Node& g, const Node& p) {
    if (to_string(g) == to_string(p)) return true;
    if (g.kind == K::kText || p.kind == K::kText) return text_eq(g, p);
    if (g.kind == K::kRel || p.kind == K::kRel) {
      if (g.kind != K::kRel || p.kind != K::kRel) {
        // elements of a set/tuple may be written as assignments: (x = 1, y = 2) vs (1, 2)
        if (is_equation(p) && g.kind != K::kRel) return eq(g, *p.kids.back());
        if (is_assignment(g) && p.kind != K::kRel) return eq(*g.kids.back(), p);
        return false;
      }
      return rel_eq(g, p);
    }
    if (is_container(g) || is_container(p)) return container_eq(g, p);
    return scalar_eq(g, p);
  }

 private:
  SymbolicBackend& backend_;

  bool text_eq(const Node& g, const Node& p) {
    auto text_of = [](const Node& n) -> std::optional<std::string> {
      if (n.kind == K::kText) {
        std::string t;
        for (char c : n.text)
          if (c != ' ') t.push_back(c);
        return t;
      }
      auto l = letters(n);
      if (l) return lower(*l);
      return std::nullopt;
    };
    auto a = text_of(g), b = text_of(p);
    return a && b && *a == *b;
  }

  bool scalar_eq(const Node& g, const Node& p) {
    // Percent: 50\% matches 0.5 (its value) and also a bare 50 (the number the question asked for).
    if (g.kind == K::kPct && p.kind != K::kPct && scalar_eq(*g.kids[0], p)) return true;
    if (p.kind == K::kPct && g.kind != K::kPct && scalar_eq(g, *p.kids[0])) return true;
    bool float_mode = has_float(g) || has_float(p);
    auto a = exact_value(g);
    auto b = exact_value(p);
    if (a && b) {
      if (float_mode) {
        auto ra = a->round_to(6), rb = b->round_to(6);
        if (ra.ok && rb.ok) return ra.num == rb.num && ra.den == rb.den;
        return std::fabs(a->to_double() - b->to_double()) <= 1e-9 * std::max(1.0, std::fabs(a->to_double()));
      }
      return a->num == b->num && a->den == b->den;
    }
    // Letters against letters that differ only in order or case are not the same answer unless
    // algebra says so; anything with infinity can only be equal structurally.
    if (has_kind(g, K::kConst) || has_kind(p, K::kConst)) {
      auto is_inf = [](const Node& n) {
        return (n.kind == K::kConst && n.text == "inf") ||
               (n.kind == K::kNeg && n.kids[0]->kind == K::kConst && n.kids[0]->text == "inf");
      };
      if (is_inf(g) || is_inf(p)) return false;
    }
    if (auto lg = letters(g), lp = letters(p); lg && lp && lg->size() > 1 && lower(*lg) == lower(*lp) && *lg != *lp)
      return true;  // the same word in different case
    return backend_.equal(g, p, float_mode);
  }

  bool rel_eq(const Node& g, const Node& p) {
    if (g.kids.size() != p.kids.size()) return false;
    auto flip = [](const std::string& op) -> std::string {
      if (op == "<") return ">";
      if (op == ">") return "<";
      if (op == "<=") return ">=";
      if (op == ">=") return "<=";
      return op;
    };
    if (g.kids.size() == 2) {
      const std::string& go = g.ops[0];
      const std::string& po = p.ops[0];
      // assignments of the same variable: compare the values
      if (go == po && g.kids[0]->kind == K::kSym && p.kids[0]->kind == K::kSym && g.kids[0]->text == p.kids[0]->text) {
        if (eq(*g.kids[1], *p.kids[1])) return true;
      }
      if (go == flip(po) && go != po && g.kids[0]->kind == K::kSym && p.kids[1]->kind == K::kSym &&
          g.kids[0]->text == p.kids[1]->text) {
        if (eq(*g.kids[1], *p.kids[0])) return true;
      }
      auto diff = [](const Node& r, bool swap) {
        const NodePtr& l = swap ? r.kids[1] : r.kids[0];
        const NodePtr& rr = swap ? r.kids[0] : r.kids[1];
        return mk(K::kAdd, {l, mk(K::kNeg, {rr})});
      };
      if (go == "=" && po == "=") return backend_.proportional(*diff(g, false), *diff(p, false), false);
      if (go == "!=" || po == "!=") return go == po && backend_.proportional(*diff(g, false), *diff(p, false), false);
      if (go == po) return backend_.proportional(*diff(g, false), *diff(p, false), true);
      if (go == flip(po)) return backend_.proportional(*diff(g, false), *diff(p, true), true);
      return false;
    }
    // chains: same direction element-wise, or reversed
    bool same = g.ops == p.ops;
    if (same) {
      for (std::size_t i = 0; i < g.kids.size(); ++i)
        if (!eq(*g.kids[i], *p.kids[i])) return false;
      return true;
    }
    std::vector<std::string> rev;
    for (auto it = p.ops.rbegin(); it != p.ops.rend(); ++it) rev.push_back(flip(*it));
    if (rev != g.ops) return false;
    for (std::size_t i = 0; i < g.kids.size(); ++i)
      if (!eq(*g.kids[i], *p.kids[p.kids.size() - 1 - i])) return false;
    return true;
  }

  // Unordered match of two element lists (sets, unions): a perfect bipartite matching under eq()
  // (Kuhn's augmenting paths over the n x n equality table, so O(n^3) at worst, never a
  // factorial search). Sets larger than kMaxSet are compared by their sorted canonical texts.
  static constexpr std::size_t kMaxSet = 64;
  bool match_unordered(const std::vector<NodePtr>& a, const std::vector<NodePtr>& b) {
    if (a.size() != b.size()) return false;
    const std::size_t n = a.size();
    if (n > kMaxSet) {
      std::vector<std::string> sa, sb;
      for (const auto& x : a) sa.push_back(to_string(*x));
      for (const auto& x : b) sb.push_back(to_string(*x));
      std::sort(sa.begin(), sa.end());
      std::sort(sb.begin(), sb.end());
      return sa == sb;
    }
    std::vector<std::vector<char>> e(n, std::vector<char>(n, 0));
    for (std::size_t i = 0; i < n; ++i) {
      bool any = false;
      for (std::size_t j = 0; j < n; ++j) any |= (e[i][j] = eq(*a[i], *b[j]) ? 1 : 0);
      if (!any) return false;  // an element with no partner: no need to look further
    }
    std::vector<int> match_of_b(n, -1);
    for (std::size_t i = 0; i < n; ++i) {
      std::vector<char> seen(n, 0);
      std::function<bool(std::size_t)> augment = [&](std::size_t u) {
        for (std::size_t j = 0; j < n; ++j) {
          if (!e[u][j] || seen[j]) continue;
          seen[j] = 1;
          if (match_of_b[j] < 0 || augment(static_cast<std::size_t>(match_of_b[j]))) {
            match_of_b[j] = static_cast<int>(u);
            return true;
          }
        }
        return false;
      };
      if (!augment(i)) return false;
    }
    return true;
  }

  bool match_ordered(const std::vector<NodePtr>& a, const std::vector<NodePtr>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!eq(*a[i], *b[i])) return false;
    return true;
  }

  static std::vector<NodePtr> dedup_by_text(const std::vector<NodePtr>& v) {
    std::vector<NodePtr> out;
    std::vector<std::string> seen;
    for (const auto& n : v) {
      auto s = to_string(*n);
      if (std::find(seen.begin(), seen.end(), s) != seen.end()) continue;
      seen.push_back(s);
      out.push_back(n);
    }
    return out;
  }

  bool container_eq(const Node& g, const Node& p) {
    auto single = [](const Node& n) {  // a non-set as a one-element set
      return std::vector<NodePtr>{std::make_shared<Node>(n)};
    };
    if (g.kind == K::kPm || p.kind == K::kPm) {
      Node a = g.kind == K::kPm ? *expand_pm(std::make_shared<Node>(g)) : g;
      Node b = p.kind == K::kPm ? *expand_pm(std::make_shared<Node>(p)) : p;
      return eq(a, b);
    }
    if (g.kind == K::kMatrix || p.kind == K::kMatrix) {
      if (g.kind != p.kind || g.rows != p.rows || g.cols != p.cols) return false;
      return match_ordered(g.kids, p.kids);
    }
    if (g.kind == K::kInterval && p.kind == K::kInterval)
      return g.lo_closed == p.lo_closed && g.hi_closed == p.hi_closed && match_ordered(g.kids, p.kids);
    if (g.kind == K::kUnion && p.kind == K::kUnion) return match_unordered(g.kids, p.kids);
    if (g.kind == K::kUnion || p.kind == K::kUnion) return false;
    // An open interval (a, b) is written like the pair (a, b) (Math-Verify compares them as tuples).
    if (g.kind == K::kInterval || p.kind == K::kInterval) {
      const Node& iv = g.kind == K::kInterval ? g : p;
      const Node& other = g.kind == K::kInterval ? p : g;
      if (iv.lo_closed || iv.hi_closed || other.kind == K::kInterval) return false;
      if ((other.kind == K::kTuple || other.kind == K::kSet) && other.kids.size() == 2)
        return g.kind == K::kInterval ? match_ordered(g.kids, p.kids) : match_ordered(g.kids, p.kids);
      return false;
    }
    if (g.kind == K::kTuple && p.kind == K::kTuple) return match_ordered(g.kids, p.kids);
    if (g.kind == K::kSet || p.kind == K::kSet) {
      auto a = g.kind == K::kSet || g.kind == K::kTuple ? g.kids : single(g);
      auto b = p.kind == K::kSet || p.kind == K::kTuple ? p.kids : single(p);
      if (g.kind == K::kSet) a = dedup_by_text(a);
      if (p.kind == K::kSet) b = dedup_by_text(b);
      return match_unordered(a, b);
    }
    return false;  // a tuple against a scalar
  }
};

}  // namespace

bool answers_equal(const Node& gold, const Node& pred, SymbolicBackend& backend) {
  Comparer c(backend);
  return c.top(std::make_shared<Node>(gold), std::make_shared<Node>(pred));
}

bool compare_normalized(const std::string& gold, const std::string& pred, SymbolicBackend& backend) {
  if (gold.empty() || pred.empty()) return false;
  if (gold == pred) return true;
  auto g = parse_answer(gold);
  auto p = parse_answer(pred);
  if (!g || !p) {
    // Outside the parsed subset: only the same text (ignoring case and spaces) is equal.
    auto squash = [](const std::string& s) {
      std::string t;
      for (char c : s)
        if (c != ' ') t.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
      return t;
    };
    return squash(gold) == squash(pred);
  }
  return answers_equal(*g, *p, backend);
}

}  // namespace prism::rewards::detail
