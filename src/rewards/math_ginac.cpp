// The GiNaC side of the math verifier: answer trees -> GiNaC expressions, then "is a - b zero?"
// by normal form and, failing that, by evaluation at random points. GiNaC keeps global state
// (symbol tables, remember tables, reference counts without atomics), so this file runs only in
// the single-threaded worker processes of math_pool.cpp.
#include <ginac/ginac.h>

#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "rewards/math_expr.h"

namespace prism::rewards::detail {
namespace {

using K = Node::Kind;

struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class GinacBackend : public SymbolicBackend {
 public:
  bool equal(const Node& a, const Node& b, bool float_mode) override {
    try {
      GiNaC::ex ea = convert(a), eb = convert(b);
      if (float_mode) {
        GiNaC::ex va = GiNaC::evalf(ea), vb = GiNaC::evalf(eb);
        if (GiNaC::is_a<GiNaC::numeric>(va) && GiNaC::is_a<GiNaC::numeric>(vb)) {
          auto na = GiNaC::ex_to<GiNaC::numeric>(va), nb = GiNaC::ex_to<GiNaC::numeric>(vb);
          if (!na.is_real() || !nb.is_real()) return same_numeric(na, nb);
          double x = na.to_double(), y = nb.to_double();
          if (std::fabs(x) < 1e12 && std::fabs(y) < 1e12) return std::llround(x * 1e6) == std::llround(y * 1e6);
          return std::fabs(x - y) <= 1e-12 * std::max(std::fabs(x), std::fabs(y));
        }
      }
      return zero(ea - eb);
    } catch (const std::exception&) {
      return false;  // division by zero, unsupported construct, ...
    }
  }

  bool proportional(const Node& a, const Node& b, bool positive) override {
    try {
      GiNaC::ex ea = GiNaC::expand(convert(a)), eb = GiNaC::expand(convert(b));
      if (eb.is_zero()) return ea.is_zero();
      if (ea.is_zero()) return false;
      GiNaC::ex ratio = GiNaC::normal(ea / eb);
      if (!has_symbols(ratio)) {
        GiNaC::ex v = GiNaC::evalf(ratio);
        if (!GiNaC::is_a<GiNaC::numeric>(v)) return false;
        auto n = GiNaC::ex_to<GiNaC::numeric>(v);
        if (!n.is_real() || n.is_zero()) return false;
        return !positive || n.is_positive();
      }
      // Not a constant in normal form: check numerically that the ratio is constant.
      std::optional<double> first;
      for (int trial = 0; trial < kPoints; ++trial) {
        auto v = at_point(ratio, trial);
        if (!v) return false;
        if (!first) {
          first = *v;
          if (*first == 0 || (positive && *first < 0)) return false;
        } else if (std::fabs(*v - *first) > 1e-9 * std::max(1.0, std::fabs(*first))) {
          return false;
        }
      }
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

 private:
  static constexpr int kPoints = 4;
  std::map<std::string, GiNaC::symbol> syms_;

  GiNaC::ex symbol(const std::string& name) {
    auto it = syms_.find(name);
    if (it == syms_.end()) it = syms_.emplace(name, GiNaC::symbol(name)).first;
    return it->second;
  }

  GiNaC::ex convert(const Node& n) {
    switch (n.kind) {
      case K::kNum: {
        auto slash = n.text.find('/');
        if (slash == std::string::npos) return GiNaC::numeric(n.text.c_str());
        return GiNaC::numeric(n.text.substr(0, slash).c_str()) / GiNaC::numeric(n.text.substr(slash + 1).c_str());
      }
      case K::kSym:
        return symbol(n.text);
      case K::kConst:
        if (n.text == "pi") return GiNaC::Pi;
        if (n.text == "e") return GiNaC::exp(GiNaC::ex(1));
        if (n.text == "i") return GiNaC::I;
        throw Unsupported("infinity");
      case K::kAdd: {
        GiNaC::ex s = 0;
        for (const auto& k : n.kids) s += convert(*k);
        return s;
      }
      case K::kMul: {
        GiNaC::ex s = 1;
        for (const auto& k : n.kids) s *= convert(*k);
        return s;
      }
      case K::kDiv: {
        GiNaC::ex d = convert(*n.kids[1]);
        if (d.is_zero()) throw Unsupported("division by zero");
        return convert(*n.kids[0]) / d;
      }
      case K::kNeg:
        return -convert(*n.kids[0]);
      case K::kPow: {
        GiNaC::ex b = convert(*n.kids[0]), e = convert(*n.kids[1]);
        // 2^{10^9} would take the worker's time and memory; such answers are compared numerically.
        if (GiNaC::is_a<GiNaC::numeric>(e) && GiNaC::abs(GiNaC::ex_to<GiNaC::numeric>(e)) > 4096 &&
            !(b.is_equal(1) || b.is_zero() || b.is_equal(-1)))
          throw Unsupported("huge exponent");
        return GiNaC::pow(b, e);
      }
      case K::kPct:
        return convert(*n.kids[0]) / 100;
      case K::kFunc:
        return function(n);
      default:
        throw Unsupported("not a scalar");
    }
  }

  GiNaC::ex function(const Node& n) {
    const std::string& f = n.text;
    GiNaC::ex x = convert(*n.kids[0]);
    if (f == "sqrt") {
      if (n.kids.size() == 2) return GiNaC::pow(x, 1 / convert(*n.kids[1]));
      return GiNaC::sqrt(x);
    }
    if (f == "sin") return GiNaC::sin(x);
    if (f == "cos") return GiNaC::cos(x);
    if (f == "tan") return GiNaC::tan(x);
    if (f == "sec") return 1 / GiNaC::cos(x);
    if (f == "csc") return 1 / GiNaC::sin(x);
    if (f == "cot") return GiNaC::cos(x) / GiNaC::sin(x);
    if (f == "arcsin") return GiNaC::asin(x);
    if (f == "arccos") return GiNaC::acos(x);
    if (f == "arctan") return GiNaC::atan(x);
    if (f == "sinh") return GiNaC::sinh(x);
    if (f == "cosh") return GiNaC::cosh(x);
    if (f == "tanh") return GiNaC::tanh(x);
    if (f == "exp") return GiNaC::exp(x);
    if (f == "ln") return GiNaC::log(x);
    if (f == "log") {
      // \log without a base is the natural logarithm (as sympy and latex2sympy2_extended read it)
      if (n.kids.size() == 2) return GiNaC::log(x) / GiNaC::log(convert(*n.kids[1]));
      return GiNaC::log(x);
    }
    if (f == "abs") return GiNaC::abs(x);
    if (f == "fact") {
      if (!GiNaC::is_a<GiNaC::numeric>(x) || !GiNaC::ex_to<GiNaC::numeric>(x).is_nonneg_integer() ||
          GiNaC::ex_to<GiNaC::numeric>(x) > 1000)
        throw Unsupported("factorial");
      return GiNaC::factorial(x);
    }
    if (f == "binom") return GiNaC::binomial(x, convert(*n.kids[1]));
    if (f == "floor" || f == "ceil") {
      GiNaC::ex v = GiNaC::evalf(x);
      if (!GiNaC::is_a<GiNaC::numeric>(v) || !GiNaC::ex_to<GiNaC::numeric>(v).is_real()) throw Unsupported(f);
      double d = GiNaC::ex_to<GiNaC::numeric>(v).to_double();
      return GiNaC::numeric(static_cast<long>(f == "floor" ? std::floor(d) : std::ceil(d)));
    }
    throw Unsupported(f);
  }

  static bool has_symbols(const GiNaC::ex& e) {
    if (GiNaC::is_a<GiNaC::symbol>(e)) return true;
    for (std::size_t i = 0; i < e.nops(); ++i)
      if (has_symbols(e.op(i))) return true;
    return false;
  }

  static void collect(const GiNaC::ex& e, GiNaC::exset& out) {
    if (GiNaC::is_a<GiNaC::symbol>(e)) out.insert(e);
    for (std::size_t i = 0; i < e.nops(); ++i) collect(e.op(i), out);
  }

  static bool same_numeric(const GiNaC::numeric& a, const GiNaC::numeric& b) {
    GiNaC::numeric d = GiNaC::abs(a - b);
    double scale = std::max(1.0, GiNaC::abs(a).to_double());
    return d.to_double() <= 1e-10 * scale;
  }

  // The value of e with every symbol set to a fixed pseudo-random point (real, away from the
  // usual poles 0 and +-1). nullopt when it is not a finite real number there.
  std::optional<double> at_point(const GiNaC::ex& e, int trial) {
    GiNaC::exset vars;
    collect(e, vars);
    std::mt19937_64 rng(0x5eed + static_cast<unsigned>(trial) * 7919u);
    std::uniform_real_distribution<double> dist(0.13, 2.9);
    GiNaC::exmap subs;
    for (const auto& v : vars) subs[v] = GiNaC::numeric(dist(rng));
    GiNaC::ex val = GiNaC::evalf(e.subs(subs));
    if (!GiNaC::is_a<GiNaC::numeric>(val)) return std::nullopt;
    auto num = GiNaC::ex_to<GiNaC::numeric>(val);
    if (!num.is_real()) {
      // complex values: compare modulus and argument via real and imaginary parts
      return GiNaC::real(num).to_double() * 1.000123 + GiNaC::imag(num).to_double();
    }
    double d = num.to_double();
    if (!std::isfinite(d)) return std::nullopt;
    return d;
  }

  bool zero(const GiNaC::ex& diff) {
    if (diff.is_zero()) return true;
    GiNaC::ex d = GiNaC::normal(GiNaC::expand(diff));
    if (d.is_zero()) return true;
    if (!has_symbols(d)) {
      GiNaC::ex v = GiNaC::evalf(d);
      if (!GiNaC::is_a<GiNaC::numeric>(v)) return false;
      return GiNaC::abs(GiNaC::ex_to<GiNaC::numeric>(v)).to_double() <= 1e-12;
    }
    // Radicals and functions the normal form does not canonicalise: the difference must vanish at
    // every sample point (and be defined at most of them).
    int defined = 0;
    for (int trial = 0; trial < 2 * kPoints && defined < kPoints; ++trial) {
      try {
        auto v = at_point(diff, trial);
        if (!v) continue;
        ++defined;
        if (std::fabs(*v) > 1e-9) return false;
      } catch (const std::exception&) {
        continue;  // a pole at this point
      }
    }
    return defined >= kPoints;
  }
};

}  // namespace

std::unique_ptr<SymbolicBackend> make_ginac_backend() { return std::make_unique<GinacBackend>(); }

}  // namespace prism::rewards::detail
