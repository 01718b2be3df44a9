// Prompt records (include/prism/eval/prompt_records.h).
#include "prism/eval/prompt_records.h"

#include <nlohmann/json.hpp>

#include "prism/core/error.h"
#include "prism/data/jsonl.h"
#include "prism/io/tokenizer.h"

namespace prism::eval {

std::vector<PromptRecord> load_prompt_records(const std::string& path, const PromptFormat& format,
                                              const io::Tokenizer& tok) {
  std::vector<PromptRecord> out;
  data::JsonlReader reader(path);
  data::JsonRecord r;
  while ((format.limit <= 0 || static_cast<int64_t>(out.size()) < format.limit) && reader.next(r)) {
    PromptRecord p;
    p.source = str(r.file(), ":", r.line());
    p.id = r.has("id") ? r.text("id") : p.source;
    p.target.domain = r.string("domain");
    auto it = format.templates.find(p.target.domain);
    p.text = it != format.templates.end() ? r.render(it->second)
             : !format.any_template.empty() ? r.render(format.any_template)
                                            : r.string(format.prompt_field);
    if (r.has("answer")) p.target.answer = r.text("answer");
    if (r.has("entry_point")) p.target.entry_point = r.string("entry_point");
    if (p.target.domain == "code" && r.has("prompt")) p.target.prompt = r.string("prompt");
    // Lists (MBPP's assert list, stdin/stdout cases, choice texts) need the JSON itself.
    const auto j = nlohmann::json::parse(r.dump());
    if (auto t = j.find("tests"); t != j.end() && !t->is_null()) {
      if (t->is_array()) {
        // MBPP: the setup code runs after the solution and before the asserts.
        if (auto su = j.find("test_setup_code"); su != j.end() && su->is_string() && !su->get<std::string>().empty())
          p.target.tests = su->get<std::string>() + "\n";
        for (const auto& line : *t) p.target.tests += (line.is_string() ? line.get<std::string>() : line.dump()) + "\n";
      } else {
        p.target.tests = r.text("tests");
      }
    }
    if (auto io = j.find("io"); io != j.end() && io->is_array())
      for (const auto& c : *io) {
        PRISM_CHECK(c.is_object() && c.contains("input") && c.contains("output") && c["input"].is_string() &&
                        c["output"].is_string(),
                    p.source, ": io: each case must be {\"input\": \"...\", \"output\": \"...\"}");
        p.target.io_cases.emplace_back(c["input"].get<std::string>(), c["output"].get<std::string>());
      }
    if (auto ch = j.find("choices"); ch != j.end() && ch->is_array())
      for (const auto& c : *ch) p.target.choices.push_back(c.is_string() ? c.get<std::string>() : c.dump());
    p.target.metadata["id"] = p.id;
    auto ids = tok.encode(p.text, /*add_special_tokens=*/true);
    PRISM_CHECK(!ids.empty(), p.source, ": prompt is empty after tokenization");
    PRISM_CHECK(format.max_prompt_tokens <= 0 || static_cast<int64_t>(ids.size()) <= format.max_prompt_tokens,
                p.source, ": prompt has ", ids.size(), " tokens; at most ", format.max_prompt_tokens,
                " fit (context length - max new tokens)");
    p.tokens.assign(ids.begin(), ids.end());
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace prism::eval
