// Code verifier: runs a completion against tests in the Sandbox (prism/rewards/sandbox.h).
//
//   HumanEval style  (entry_point set): prompt + code + "\n" + tests, then check(entry_point)
//   MBPP style       (tests set, no entry_point): code, then each top-level `assert` of tests
//   stdin/stdout     (io_cases set): the code run once per case; trimmed output compared
//
// Reasons: "passed", "test_failed: k/n passed", "syntax_error: ...", "runtime_error: <first line>",
// "timeout", "output_limit", "killed: signal N", "no_code", "bad_tests: ...", "sandbox_error: ...".
#pragma once

#include <memory>
#include <string>

#include "prism/rewards/sandbox.h"
#include "prism/rewards/verifier.h"

namespace prism::rewards {

struct CodeVerifierOptions {
  SandboxOptions sandbox;
  /// Pass rule: "all" (default: reward_correct only when every test passes) or "fraction"
  /// (reward_correct * passed / total; `correct` still means all passed).
  std::string pass_rule = "all";
  double reward_correct = 1.0;
  double reward_incorrect = 0.0;
};

/// The code a completion contains: the last complete fenced block tagged python/py/python3 (else
/// the last complete untagged block; else the text after an unclosed ```python fence), or the raw
/// completion when it has no fence.
std::string extract_code(const std::string& completion);

/// Output comparison of stdin/stdout cases: CRLF -> LF, trailing spaces of each line and leading /
/// trailing blank lines dropped.
std::string normalize_output(const std::string& s);

/// A Verifier for domain "code" (name "code"); verify_batch runs the sandbox worker pool.
/// Throws prism::Error when the sandbox cannot be created (see Sandbox) or pass_rule is unknown.
std::unique_ptr<Verifier> make_code_verifier(const CodeVerifierOptions& opts);

}  // namespace prism::rewards
