// The rollout engine's loop (engine.h says what it guarantees). One iteration:
//   1. fill free slots with queued samples: a request's prompt is prefilled once into the prefix
//      row (last-position logits only) and copied into a slot per sample;
//   2. sample one token for every occupied slot from its logits (one [A, V] batch);
//   3. record tokens and log-probs on the host (the step's one device->host transfer), detect stop
//      tokens, stop strings and length limits;
//   4. compact: the last occupied slot moves into each finished slot, so occupied slots stay a
//      prefix [0, A) of the state and the forward never runs a finished or empty row;
//   5. one forward of the A occupied slots (rows of different lengths) -> next step's logits.
#include "prism/generate/engine.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "prism/core/error.h"
#include "prism/generate/sampler.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/models/decode_state.h"
#include "prism/models/decode_weights.h"

namespace prism::generate {

const char* finish_reason_name(FinishReason r) { return r == FinishReason::kStop ? "stop" : "length"; }

namespace {

// One occupied decode slot.
struct Active {
  int64_t request = 0, index = 0;
  int64_t limit = 0;  // completion tokens allowed
  Sample* out = nullptr;
  int64_t next_token = 0;
};

std::vector<int32_t> to_i32(const std::vector<int64_t>& v, size_t from = 0) {
  return std::vector<int32_t>(v.begin() + static_cast<std::ptrdiff_t>(from), v.end());
}

}  // namespace

struct Engine::Impl {
  const models::CausalLM& model;
  EngineOptions opts;
  const io::Tokenizer* tok = nullptr;
  std::vector<int64_t> eos;
  Stats stats;
  std::unique_ptr<models::DecodeState> slots, prefix;
  bool may_use_weights = false;  // EngineOptions::decode_weights resolved for this model (auto: CPU, no hooks)
  std::unique_ptr<models::DecodeWeights> weights;  // built on the first generate() call

  Impl(const models::CausalLM& m, EngineOptions o, const io::Tokenizer* t) : model(m), opts(std::move(o)), tok(t) {
    PRISM_CHECK(opts.slots >= 1, "Engine: slots must be >= 1, got ", opts.slots);
    PRISM_CHECK(opts.max_length >= 0, "Engine: max_length must be >= 0 (0 = per call), got ", opts.max_length);
    eos = opts.eos_token_ids ? *opts.eos_token_ids : model.config().eos_token_ids;
    if (opts.max_length > 0) allocate(opts.max_length);
    may_use_weights = opts.decode_weights.value_or(model.device().is_cpu() && !model.has_layer_hooks());
    PRISM_CHECK(!may_use_weights || !model.has_layer_hooks(),
                "Engine: decode_weights cannot be used with layer hooks (sharded parameters)");
  }

  int64_t context() const { return model.config().max_position_embeddings; }

  void allocate(int64_t max_length) {
    if (slots && slots->max_length() >= max_length) {
      slots->reset();
      prefix->reset();
      return;
    }
    slots.reset();
    prefix.reset();
    slots = std::make_unique<models::DecodeState>(model, opts.slots, max_length);
    prefix = std::make_unique<models::DecodeState>(model, 1, max_length);
  }

  void validate(const std::vector<Request>& reqs) const {
    const int64_t V = model.config().vocab_size;
    for (size_t r = 0; r < reqs.size(); ++r) {
      const auto& q = reqs[r];
      const auto& p = q.params;
      auto where = [&](const char* field) { return key_context("", "request " + std::to_string(r) + " " + field); };
      if (q.prompt.empty()) throw Error("the prompt is empty (at least one token is needed)", where("prompt"));
      for (size_t i = 0; i < q.prompt.size(); ++i)
        if (q.prompt[i] < 0 || q.prompt[i] >= V)
          throw Error("token id outside the vocabulary", {"", "request " + std::to_string(r) + " prompt[" + std::to_string(i) + "]",
                                                          "", "0 <= id < " + std::to_string(V), std::to_string(q.prompt[i])});
      const int64_t P = static_cast<int64_t>(q.prompt.size());
      const int64_t room = opts.max_length > 0 ? opts.max_length : context();
      if (room > 0 && P >= room)
        throw Error("the prompt leaves no room for a completion",
                    {"", "request " + std::to_string(r) + " prompt", "",
                     "fewer than " + std::to_string(room) + " tokens (" +
                         (opts.max_length > 0 ? "the engine's max_length" : "the model's context length") + ")",
                     std::to_string(P) + " tokens"});
      if (p.n < 1) throw Error("n must be >= 1", {"", "request " + std::to_string(r) + " n", "", ">= 1", std::to_string(p.n)});
      if (p.max_new_tokens < 1)
        throw Error("max_new_tokens must be >= 1", {"", "request " + std::to_string(r) + " max_new_tokens", "", ">= 1",
                                                    std::to_string(p.max_new_tokens)});
      if (!(p.temperature >= 0.0) || !std::isfinite(p.temperature))
        throw Error("temperature must be >= 0", where("temperature"));
      if (!(p.top_p > 0.0 && p.top_p <= 1.0)) throw Error("top_p must be in (0, 1]", where("top_p"));
      if (p.top_k < 0) throw Error("top_k must be >= 0 (0 = off)", where("top_k"));
      if (!(p.min_p >= 0.0 && p.min_p <= 1.0)) throw Error("min_p must be in [0, 1]", where("min_p"));
      if (p.stop_token_ids)
        for (auto id : *p.stop_token_ids)
          if (id < 0) throw Error("stop token ids must be >= 0", where("stop_token_ids"));
      for (const auto& s : p.stop) {
        if (s.empty()) throw Error("stop strings must not be empty", where("stop"));
        if (!tok) throw Error("stop strings need a tokenizer (the engine has none)", where("stop"));
      }
    }
  }

  // Longest stop string in bytes + 4 tokens: every tokenizer token decodes to at least one byte, so
  // a stop string completed by the newest token lies inside this many trailing tokens (the extra
  // tokens cover a multi-byte character split across tokens).
  static int64_t stop_window(const SamplingParams& p) {
    size_t m = 0;
    for (const auto& s : p.stop) m = std::max(m, s.size());
    return static_cast<int64_t>(m) + 4;
  }

  // Returns the stop string the completion now contains, or nullptr.
  const std::string* hit_stop_string(const Sample& s, const SamplingParams& p) const {
    if (p.stop.empty()) return nullptr;
    const size_t n = s.tokens.size(), w = static_cast<size_t>(stop_window(p));
    const std::string text = tok->decode(to_i32(s.tokens, n > w ? n - w : 0), /*skip_special_tokens=*/true);
    for (const auto& st : p.stop)
      if (text.find(st) != std::string::npos) return &st;
    return nullptr;
  }

  void finish(Active& a, const Request& req, FinishReason why, std::string reason) {
    Sample& s = *a.out;
    s.finish_reason = why;
    s.stop_reason = std::move(reason);
    s.completion_length = static_cast<int64_t>(s.tokens.size());
    if (!tok) return;
    std::vector<int64_t> shown = s.tokens;
    const bool by_token = why == FinishReason::kStop && !shown.empty() &&
                          s.stop_reason == std::to_string(shown.back()) &&
                          std::find(req.params.stop.begin(), req.params.stop.end(), s.stop_reason) == req.params.stop.end();
    if (by_token) shown.pop_back();  // the stop token is in the ids, not in the text
    s.text = tok->decode(to_i32(shown), /*skip_special_tokens=*/true);
    if (why == FinishReason::kStop && !by_token) {
      size_t cut = std::string::npos;
      for (const auto& st : req.params.stop) cut = std::min(cut, s.text.find(st));
      if (cut != std::string::npos) s.text.resize(cut);
    }
  }

  std::vector<Sample> generate(const std::vector<Request>& reqs, const std::function<void(const Progress&)>& progress) {
    validate(reqs);
    at::NoGradGuard ng;
    const auto t0 = std::chrono::steady_clock::now();
    stats = Stats{};
    const int64_t ctx = context();
    int64_t need = 1;
    for (const auto& q : reqs) {
      int64_t len = static_cast<int64_t>(q.prompt.size()) + q.params.max_new_tokens;
      if (ctx > 0) len = std::min(len, ctx);
      need = std::max(need, len);
    }
    const int64_t max_len = opts.max_length > 0 ? opts.max_length : need;
    allocate(max_len);
    stats.max_length = slots->max_length();
    stats.state_bytes = slots->bytes() + prefix->bytes();
    // Output slots in (request, index) order.
    std::vector<int64_t> first(reqs.size() + 1, 0);
    for (size_t r = 0; r < reqs.size(); ++r) first[r + 1] = first[r] + reqs[r].params.n;
    std::vector<Sample> out(static_cast<size_t>(first.back()));
    std::vector<int64_t> left(reqs.size());
    for (size_t r = 0; r < reqs.size(); ++r) left[r] = reqs[r].params.n;

    // Auto: only when rows decode together. One row is a matrix-vector product, as fast on the
    // [out, in] parameters (no packing there) as on the copies, which would only cost their refresh.
    const bool use_weights =
        opts.decode_weights ? *opts.decode_weights : may_use_weights && opts.slots > 1 && first.back() > 1;
    if (use_weights) {
      // Re-copied on every call: the optimizer may have updated the parameters in place since.
      const auto tw = std::chrono::steady_clock::now();
      if (weights) {
        weights->refresh();
      } else {
        weights = std::make_unique<models::DecodeWeights>(model);
      }
      stats.weight_copy_bytes = weights->bytes();
      stats.weight_copy_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count();
    }

    Progress prog;
    prog.requests_total = static_cast<int64_t>(reqs.size());
    prog.samples_total = first.back();

    const auto dev = model.device();
    std::vector<Active> act;
    act.reserve(static_cast<size_t>(opts.slots));
    at::Tensor step_logits;  // [A, V] for the occupied slots after the last forward
    size_t next_req = 0;
    int64_t next_idx = 0;
    int64_t prefix_req = -1;
    at::Tensor prefix_logits;  // [1, V] of the prompt in the prefix row
    models::ForwardOptions fo;
    fo.last_logits_only = true;
    fo.decode_weights = use_weights ? weights.get() : nullptr;

    while (true) {
      // 1. fill free slots
      std::vector<at::Tensor> joining;
      while (static_cast<int64_t>(act.size()) < opts.slots && next_req < reqs.size()) {
        const auto& q = reqs[next_req];
        if (prefix_req != static_cast<int64_t>(next_req)) {
          prefix->reset();
          fo.state = prefix.get();
          fo.state_row = 0;
          auto ids = at::tensor(q.prompt, at::kLong).view({1, -1}).to(dev);
          prefix_logits = model.forward(ids, fo).logits.select(1, 0);
          prefix_req = static_cast<int64_t>(next_req);
          stats.prompt_tokens += static_cast<int64_t>(q.prompt.size());
        }
        const int64_t row = static_cast<int64_t>(act.size());
        slots->copy_row_from(*prefix, 0, row);
        Active a;
        a.request = static_cast<int64_t>(next_req);
        a.index = next_idx;
        a.limit = std::min(q.params.max_new_tokens, max_len - static_cast<int64_t>(q.prompt.size()));
        a.out = &out[static_cast<size_t>(first[next_req] + next_idx)];
        a.out->request = a.request;
        a.out->index = a.index;
        a.out->prompt_length = static_cast<int64_t>(q.prompt.size());
        a.out->tokens.reserve(static_cast<size_t>(a.limit));
        act.push_back(a);
        joining.push_back(prefix_logits);
        if (++next_idx == q.params.n) next_idx = 0, ++next_req;
      }
      if (act.empty()) break;
      const int64_t A = static_cast<int64_t>(act.size());
      if (!joining.empty()) {
        if (step_logits.defined()) joining.insert(joining.begin(), step_logits);
        step_logits = joining.size() == 1 ? joining[0] : at::cat(joining, 0);
      }

      // 2. sample
      std::vector<RowParams> rp(A);
      std::vector<uint64_t> keys(A);
      for (int64_t b = 0; b < A; ++b) {
        const auto& p = reqs[act[b].request].params;
        rp[b] = {p.temperature, p.top_k, p.top_p, p.min_p};
        keys[b] = sample_key(p.seed, static_cast<uint64_t>(act[b].index), act[b].out->tokens.size());
      }
      auto res = sample_tokens(step_logits, rp, keys);
      auto host = at::stack({res.tokens.to(at::kDouble), res.logprobs.to(at::kDouble), res.sampling_logprobs.to(at::kDouble)})
                      .cpu();  // one transfer; token ids < 2^53 are exact in fp64
      const double* hp = host.data_ptr<double>();

      // 3. record, detect the end of each sample
      std::vector<int64_t> done;
      for (int64_t b = 0; b < A; ++b) {
        auto& a = act[b];
        const auto& q = reqs[a.request];
        Sample& s = *a.out;
        const int64_t t = static_cast<int64_t>(hp[b]);
        s.tokens.push_back(t);
        s.logprobs.push_back(static_cast<float>(hp[A + b]));
        s.sampling_logprobs.push_back(static_cast<float>(hp[2 * A + b]));
        a.next_token = t;
        ++stats.generated_tokens;
        const auto& stops = q.params.stop_token_ids ? *q.params.stop_token_ids : eos;
        bool ended = true;
        if (std::find(stops.begin(), stops.end(), t) != stops.end()) {
          finish(a, q, FinishReason::kStop, std::to_string(t));
        } else if (const std::string* hit = hit_stop_string(s, q.params)) {
          finish(a, q, FinishReason::kStop, *hit);
        } else if (static_cast<int64_t>(s.tokens.size()) >= a.limit) {
          finish(a, q, FinishReason::kLength, "");
        } else {
          ended = false;
        }
        if (ended) {
          done.push_back(b);
          ++prog.samples_done;
          if (--left[a.request] == 0) ++prog.requests_done;
        }
      }
      prog.tokens_generated = stats.generated_tokens;

      // 4. compact (largest first: the last occupied slot is never a finished one)
      for (auto it = done.rbegin(); it != done.rend(); ++it) {
        const int64_t r = *it, last = static_cast<int64_t>(act.size()) - 1;
        if (r != last) {
          slots->copy_row(last, r);
          act[r] = act[last];
        }
        act.pop_back();
      }

      // 5. forward the occupied slots
      if (!act.empty()) {
        const int64_t n = static_cast<int64_t>(act.size());
        std::vector<int64_t> next(n);
        for (int64_t b = 0; b < n; ++b) next[b] = act[b].next_token;
        fo.state = slots.get();
        fo.state_row = 0;
        auto ids = at::tensor(next, at::kLong).view({n, 1}).to(dev);
        step_logits = model.forward(ids, fo).logits.select(1, 0);
        ++stats.decode_steps;
      } else {
        step_logits = at::Tensor();
      }
      prog.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (progress) progress(prog);
    }
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
  }
};

Engine::Engine(const models::CausalLM& model, EngineOptions opts, const io::Tokenizer* tokenizer)
    : impl_(std::make_unique<Impl>(model, std::move(opts), tokenizer)) {}
Engine::~Engine() = default;

std::vector<Sample> Engine::generate(const std::vector<Request>& requests,
                                     const std::function<void(const Progress&)>& progress) {
  return impl_->generate(requests, progress);
}

const Stats& Engine::stats() const { return impl_->stats; }
const std::vector<int64_t>& Engine::default_stop_token_ids() const { return impl_->eos; }

}  // namespace prism::generate
