// Prompt records: the JSONL(.zst) format shared by RL prompt sets and evaluation suites
// (tools/data/make_eval_data.py writes it). One JSON object per line:
//   domain        "math" | "mc" | "code" | ... (picks the verifier)
//   prompt text   the field named by the caller (default "prompt"), or a per-domain template
//                 over the record's fields ("{question}\nPlease put your final answer in \\boxed{}.")
//   answer        gold answer (math: expression; mc: letter), any JSON scalar
//   choices       mc: option texts (list)
//   tests         code: HumanEval test code (string) or MBPP assert lines (list)
//   entry_point   code (HumanEval): the function check() receives
//   prompt        code (HumanEval): the code the completion continues
//   io            code: [{"input": ..., "output": ...}] stdin/stdout cases
//   id            optional; default file:line
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "prism/rewards/verifier.h"

namespace prism::io {
class Tokenizer;
}

namespace prism::eval {

struct PromptRecord {
  std::string id;               ///< the record's `id`, else file:line
  std::string source;           ///< file:line, for messages
  std::string text;             ///< rendered prompt
  std::vector<int64_t> tokens;  ///< tokenized prompt
  rewards::Sample target;       ///< domain, answer / tests / choices for the verifier (completion empty)
};

struct PromptFormat {
  std::string prompt_field = "prompt";          ///< used when the record's domain has no template
  std::map<std::string, std::string> templates;  ///< domain -> template (data::JsonRecord::render)
  std::string any_template;                      ///< used for domains without a template ("": prompt_field)
  int64_t max_prompt_tokens = 0;                 ///< > 0: longer prompts are refused, naming file:line
  int64_t limit = 0;                             ///< > 0: read at most this many records
};

/// Reads `path` (errors name file:line and field), renders and tokenizes every prompt.
std::vector<PromptRecord> load_prompt_records(const std::string& path, const PromptFormat& format,
                                              const io::Tokenizer& tokenizer);

}  // namespace prism::eval
