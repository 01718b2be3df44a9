// Internal to the rewards module: the answer expression tree, the LaTeX-subset parser that builds
// it, and the comparison rules. GiNaC never appears here: symbolic questions go through the
// SymbolicBackend interface, so this code runs in any thread of the trainer, and the one GiNaC
// implementation (math_ginac.cpp) runs only inside the worker processes of math_pool.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace prism::rewards::detail {

/// An exact rational on __int128 with overflow detection. `ok == false` marks an overflow; the
/// comparison then goes to the symbolic backend (GiNaC has arbitrary precision).
struct Rational {
  __int128 num = 0, den = 1;
  bool ok = true;
  static Rational of(__int128 n, __int128 d = 1);
  Rational operator+(const Rational& o) const;
  Rational operator-(const Rational& o) const;
  Rational operator*(const Rational& o) const;
  Rational operator/(const Rational& o) const;
  Rational neg() const;
  bool is_zero() const { return ok && num == 0; }
  bool is_integer() const { return ok && den == 1; }
  double to_double() const;
  /// Rounds to `digits` decimal places (half away from zero), as Math-Verify rounds floats.
  Rational round_to(int digits) const;
  std::string str() const;  ///< "p/q" or "p"
};

struct Node;
using NodePtr = std::shared_ptr<const Node>;

/// One answer expression. Numbers are exact (decimals become p/10^k with is_float set).
struct Node {
  enum class Kind {
    kNum,    ///< text: exact "p" or "p/q" (arbitrary length); is_float: written with '.' or an exponent
    kSym,    ///< text: variable name (a single letter, a greek name, or x_1)
    kConst,  ///< text: pi | e | i | inf
    kAdd,    ///< kids summed
    kMul,    ///< kids multiplied
    kDiv,    ///< kids[0] / kids[1]
    kNeg,    ///< -kids[0]
    kPow,    ///< kids[0] ^ kids[1]
    kFunc,  ///< text: sqrt (kids: radicand [, index]), sin, cos, tan, ..., log (kids: arg [, base]), ln, exp, abs, fact
    kPct,   ///< kids[0] percent
    kTuple,     ///< (a, b, ...) ordered
    kSet,       ///< \{a, b, ...\} (or a bare comma list)
    kInterval,  ///< kids[0], kids[1]; lo_closed / hi_closed
    kUnion,     ///< set union of intervals / sets
    kMatrix,    ///< rows x cols, kids row-major
    kRel,       ///< chain kids[0] ops[0] kids[1] ops[1] kids[2] ...: ops "=", "<", "<=", ">", ">=", "!="
    kText,      ///< text: a word answer (lower-cased, spaces collapsed)
    kPm,        ///< a \pm b: kids[0], kids[1] (the two values a+b, a-b)
  };
  Kind kind = Kind::kNum;
  std::string text;
  bool is_float = false;
  bool lo_closed = false, hi_closed = false;
  int rows = 0, cols = 0;
  std::vector<std::string> ops;
  std::vector<NodePtr> kids;
};

/// Canonical text of a tree (a stable serialisation; also what is sent to the workers).
std::string to_string(const Node& n);

/// Normalises a raw answer (boxed content, gold string): strips $, \left/\right, \text units,
/// degrees, thousands separators, trailing punctuation, ... . Pure string work.
std::string normalize_answer(std::string_view raw);

/// Parses a normalised answer. Returns nullptr when the text is not in the supported LaTeX
/// subset (then the caller compares strings). Depth and length are bounded.
NodePtr parse_answer(std::string_view normalized);

/// Exact value of a tree built only from numbers, + - * / and integer powers; nullopt otherwise
/// (or on overflow).
std::optional<Rational> exact_value(const Node& n);

/// Answers the questions that need algebra: is a - b identically zero? Implemented with GiNaC in
/// the worker processes only.
class SymbolicBackend {
 public:
  virtual ~SymbolicBackend() = default;
  /// a == b as expressions (polynomial/rational normal form, then numeric evaluation at random
  /// points). `float_mode`: one side was written as a decimal; compare values rounded to 6 places.
  virtual bool equal(const Node& a, const Node& b, bool float_mode) = 0;
  /// The equations/inequalities `lhs_a - rhs_a` and `lhs_b - rhs_b` are equivalent: their ratio is
  /// a non-zero constant (positive when `positive` is set, as for inequalities).
  virtual bool proportional(const Node& a, const Node& b, bool positive) = 0;
};

/// Thrown by the main-process backend when a comparison needs GiNaC: the pair is then re-run
/// from the start inside a worker process.
struct NeedsSymbolic {};

/// The full comparison of a gold answer with a predicted one (both parsed). Asymmetric like
/// Math-Verify: `x = 3` as a prediction is unwrapped against a bare gold, a gold assignment
/// against a bare prediction, and an inequality gold is turned into an interval only when the
/// prediction is a set/interval.
bool answers_equal(const Node& gold, const Node& pred, SymbolicBackend& backend);

/// A backend that throws NeedsSymbolic: what the main process runs first (the fast path).
class NoSymbolicBackend : public SymbolicBackend {
 public:
  bool equal(const Node&, const Node&, bool) override { throw NeedsSymbolic{}; }
  bool proportional(const Node&, const Node&, bool) override { throw NeedsSymbolic{}; }
};

/// Compares two normalised answer strings start to finish with a backend (string equality,
/// parse, answers_equal). Shared by the main process (NoSymbolicBackend) and the workers.
bool compare_normalized(const std::string& gold, const std::string& pred, SymbolicBackend& backend);

/// The GiNaC backend (math_ginac.cpp); only the worker processes create one.
std::unique_ptr<SymbolicBackend> make_ginac_backend();

}  // namespace prism::rewards::detail
