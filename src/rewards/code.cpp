// Code verifier: builds a harness program per sample, runs it in the Sandbox, reads the verdict.
//
// Why a harness rather than "exit status 0 means passed": a completion that calls os._exit(0) (or
// exit()) before the tests would otherwise pass. The harness runs the candidate and then each test
// case itself, and reports on stdout on a line that starts with a per-run random nonce the
// candidate never sees in its source, argv or stdin (it is read from stdin, and stdin is replaced by
// /dev/null, before the candidate runs). docs/sandbox.md lists what this does not stop.
#include "prism/rewards/code.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <random>
#include <sstream>

#include "prism/core/error.h"

namespace prism::rewards {
namespace {

// The harness (main.py). candidate.py = the code under test; tests.py = the tests. Top-level
// `assert` statements and a final `check(...)` call are the cases; other statements are setup run
// in order. The report line: "<nonce> <status> <passed> <total> <detail>".
constexpr const char* kHarness = R"PY(import ast, os, sys


def _prism_harness():
    nonce = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out = os.dup(1)

    def report(status, passed, total, detail=""):
        detail = " ".join(str(detail).split())[:300]
        sys.stdout.flush()
        os.write(out, ("\n%s %s %d %d %s\n" % (nonce, status, passed, total, detail)).encode("utf-8", "replace"))
        os._exit(0)

    def first_line(e):
        msg = str(e).strip().splitlines()
        return type(e).__name__ + (": " + msg[0] if msg else "")

    with open("tests.py", encoding="utf-8") as f:
        tests_src = f.read()
    try:
        tree = ast.parse(tests_src, "tests.py")
    except SyntaxError as e:
        report("bad_tests", 0, 0, first_line(e))
    steps = []
    for node in tree.body:
        is_case = isinstance(node, ast.Assert) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "check")
        steps.append((is_case, compile(ast.Module([node], []), "tests.py", "exec")))
    total = sum(1 for c, _ in steps if c)
    if total == 0:
        report("bad_tests", 0, 0, "no assert or check() in the tests")

    with open("candidate.py", encoding="utf-8") as f:
        src = f.read()
    try:
        code = compile(src, "candidate.py", "exec")
    except (SyntaxError, ValueError) as e:
        report("syntax_error", 0, total, first_line(e))
    g = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(code, g)
    except BaseException as e:
        report("runtime_error", 0, total, first_line(e))

    passed, status, detail = 0, "passed", ""
    for is_case, step in steps:
        try:
            exec(step, g)
            if is_case:
                passed += 1
        except AssertionError as e:
            if status == "passed":
                status, detail = "test_failed", first_line(e)
        except BaseException as e:
            if status == "passed":
                status, detail = "runtime_error", first_line(e)
            if not is_case:
                break
    report(status, passed, total, detail)


_prism_harness()
)PY";

std::string make_nonce() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "PRISM-%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string first_line(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find('\n', b);
  std::string line = s.substr(b, e == std::string::npos ? std::string::npos : e - b);
  if (line.size() > 200) line.resize(200);
  return line;
}

// The last "Type: message" line of a Python traceback on stderr ("" if none).
std::string last_exception_line(const std::string& err) {
  std::istringstream is(err);
  std::string line, last;
  while (std::getline(is, line)) {
    if (!line.empty() && line[0] != ' ' && line.find("Error") != std::string::npos) last = line;
    if (!line.empty() && line[0] != ' ' && line.find("Exception") != std::string::npos) last = line;
  }
  return first_line(last);
}

// The reason for a run that did not end with a report line.
std::string failure_reason(const SandboxResult& r) {
  if (!r.setup_error.empty()) return "sandbox_error: " + first_line(r.setup_error);
  if (r.timed_out) return "timeout";
  if (r.output_limit) return "output_limit";
  if (r.signal == 24) return "timeout";  // SIGXCPU: the CPU-time rlimit
  if (r.signal != 0) return "killed: signal " + std::to_string(r.signal);
  std::string exc = last_exception_line(r.stderr_data);
  if (exc.rfind("SyntaxError", 0) == 0 || exc.rfind("IndentationError", 0) == 0 || exc.rfind("TabError", 0) == 0)
    return "syntax_error: " + exc;
  if (!exc.empty()) return "runtime_error: " + exc;
  return "runtime_error: exit status " + std::to_string(r.exit_code);
}

class CodeVerifier final : public Verifier {
 public:
  explicit CodeVerifier(const CodeVerifierOptions& o) : opts_(o), sandbox_(o.sandbox) {
    PRISM_CHECK(o.pass_rule == "all" || o.pass_rule == "fraction", "code verifier: pass_rule must be \"all\" or ",
                "\"fraction\", got \"", o.pass_rule, "\"");
    fraction_ = o.pass_rule == "fraction";
  }

  std::string name() const override { return "code"; }

  Verdict verify(const Sample& s) override { return verify_batch({s}).front(); }

  std::vector<Verdict> verify_batch(const std::vector<Sample>& samples) override {
    // One sandbox run per test-harness sample and per stdin/stdout case, all through the pool.
    struct Job {
      size_t sample;
      std::string nonce;                      // harness runs
      const std::string* expected = nullptr;  // io cases
    };
    std::vector<SandboxRequest> reqs;
    std::vector<Job> jobs;
    std::vector<Verdict> out(samples.size());
    std::vector<bool> done(samples.size(), false);
    for (size_t i = 0; i < samples.size(); ++i) {
      const Sample& s = samples[i];
      std::string code = extract_code(s.completion);
      out[i].extracted = code;
      if (code.find_first_not_of(" \t\r\n") == std::string::npos) {
        out[i] = finish(std::move(out[i]), 0, 1, "no_code");
        done[i] = true;
        continue;
      }
      if (!s.io_cases.empty()) {
        for (const auto& [input, expected] : s.io_cases) {
          SandboxRequest r;
          r.source = code;
          r.stdin_data = input;
          reqs.push_back(std::move(r));
          jobs.push_back({i, "", &expected});
        }
        continue;
      }
      if (s.tests.find_first_not_of(" \t\r\n") == std::string::npos) {
        out[i] = finish(std::move(out[i]), 0, 1, "bad_tests: the sample has no tests, io_cases or entry_point");
        done[i] = true;
        continue;
      }
      std::string candidate = s.entry_point.empty() ? code : s.prompt + code;
      std::string tests = s.tests + "\n";
      if (!s.entry_point.empty()) tests += "\ncheck(" + s.entry_point + ")\n";
      SandboxRequest r;
      r.source = kHarness;
      std::string nonce = make_nonce();
      r.stdin_data = nonce + "\n";
      r.files = {{"candidate.py", candidate}, {"tests.py", tests}};
      reqs.push_back(std::move(r));
      jobs.push_back({i, std::move(nonce), nullptr});
    }

    std::vector<SandboxResult> results = sandbox_.run_batch(reqs);

    // Per sample: cases passed / total and the reason of the first failure ("" = a plain test failure).
    std::vector<Outcome> oc(samples.size());
    for (size_t j = 0; j < jobs.size(); ++j) {
      const Job& job = jobs[j];
      const SandboxResult& r = results[j];
      Outcome& o = oc[job.sample];
      if (job.expected == nullptr) {
        o = parse_report(r, job.nonce);
        continue;
      }
      ++o.total;
      if (r.ok() && !r.output_limit && normalize_output(r.stdout_data) == normalize_output(*job.expected)) {
        ++o.passed;
      } else if (!o.failed) {
        o.failed = true;
        if (!r.ok() || r.output_limit) o.reason = failure_reason(r);
      }
    }
    for (size_t i = 0; i < samples.size(); ++i) {
      if (done[i]) continue;
      const Outcome& o = oc[i];
      std::string why = o.reason;
      if (why.empty())
        why = o.total > 0 && o.passed == o.total ? "passed" : str("test_failed: ", o.passed, "/", o.total, " passed");
      out[i] = finish(std::move(out[i]), o.passed, std::max(o.total, 1), why);
    }
    return out;
  }

 private:
  struct Outcome {
    int passed = 0, total = 0;
    bool failed = false;
    std::string reason;  // "" = passed, or failed only by wrong answers ("test_failed: k/n passed")
  };

  // Reads "<nonce> <status> <passed> <total> <detail>" from the harness's stdout.
  static Outcome parse_report(const SandboxResult& r, const std::string& nonce) {
    Outcome o;
    size_t p = r.stdout_data.rfind("\n" + nonce + " ");
    if (p == std::string::npos || !r.setup_error.empty() || r.timed_out || r.output_limit) {
      o.failed = true;
      o.reason = failure_reason(r);
      return o;
    }
    std::istringstream is(r.stdout_data.substr(p + nonce.size() + 2));
    std::string status, detail;
    is >> status >> o.passed >> o.total;
    std::getline(is, detail);
    detail = first_line(detail);
    o.failed = status != "passed";
    if (status == "runtime_error" || status == "syntax_error" || status == "bad_tests")
      o.reason = status + ": " + detail;
    if (status != "passed" && status != "test_failed" && status != "runtime_error") o.passed = 0;
    return o;
  }

  Verdict finish(Verdict v, int passed, int total, const std::string& reason) const {
    v.correct = reason == "passed";
    v.reason = reason;
    if (v.correct) {
      v.reward = opts_.reward_correct;
    } else if (fraction_ && total > 0 && passed > 0) {
      v.reward = opts_.reward_incorrect +
                 (opts_.reward_correct - opts_.reward_incorrect) * static_cast<double>(passed) / total;
    } else {
      v.reward = opts_.reward_incorrect;
    }
    return v;
  }

  CodeVerifierOptions opts_;
  Sandbox sandbox_;
  bool fraction_ = false;
};

bool is_python_tag(const std::string& tag) {
  std::string t;
  for (char c : tag)
    if (c != ' ' && c != '\t' && c != '\r') t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return t == "python" || t == "py" || t == "python3" || t == "py3";
}

}  // namespace

std::string extract_code(const std::string& completion) {
  struct Block {
    std::string tag, body;
    bool closed;
  };
  std::vector<Block> blocks;
  size_t pos = 0;
  for (;;) {
    size_t open = completion.find("```", pos);
    if (open == std::string::npos) break;
    size_t eol = completion.find('\n', open);
    if (eol == std::string::npos) break;
    std::string tag = completion.substr(open + 3, eol - open - 3);
    size_t close = completion.find("```", eol + 1);
    // A closing fence sits at the start of a line (possibly indented).
    while (close != std::string::npos) {
      size_t ls = completion.rfind('\n', close);
      bool at_line_start = ls != std::string::npos && completion.find_first_not_of(" \t", ls + 1) == close;
      if (at_line_start || close == eol + 1) break;
      close = completion.find("```", close + 3);
    }
    if (close == std::string::npos) {
      blocks.push_back({tag, completion.substr(eol + 1), false});
      break;
    }
    blocks.push_back({tag, completion.substr(eol + 1, close - eol - 1), true});
    pos = close + 3;
  }
  if (blocks.empty()) return completion;
  const Block* best = nullptr;
  for (const auto& b : blocks)
    if (b.closed && is_python_tag(b.tag)) best = &b;
  if (best == nullptr)
    for (const auto& b : blocks)
      if (b.closed && b.tag.find_first_not_of(" \t\r") == std::string::npos) best = &b;
  if (best == nullptr)
    for (const auto& b : blocks)
      if (!b.closed && is_python_tag(b.tag)) best = &b;
  return best != nullptr ? best->body : completion;
}

std::string normalize_output(const std::string& s) {
  std::vector<std::string> lines;
  std::string cur;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '\n') {
      while (!cur.empty() && (cur.back() == ' ' || cur.back() == '\t' || cur.back() == '\r')) cur.pop_back();
      lines.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += s[i];
    }
  }
  size_t b = 0, e = lines.size();
  while (b < e && lines[b].empty()) ++b;
  while (e > b && lines[e - 1].empty()) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) {
    if (i > b) out += '\n';
    out += lines[i];
  }
  return out;
}

std::unique_ptr<Verifier> make_code_verifier(const CodeVerifierOptions& opts) {
  return std::make_unique<CodeVerifier>(opts);
}

}  // namespace prism::rewards
