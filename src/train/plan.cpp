// Memory planner (include/prism/train/plan.h). The activation terms count, op by op, the tensors
// autograd keeps for backward in the forward prism runs (models/causal_lm.cpp); the comments name
// the tensors so a change of a forward can be followed here.
#include "prism/train/plan.h"

#include <c10/core/Device.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "prism/core/error.h"
#include "prism/core/log.h"
#include "prism/data/mixture.h"
#include "prism/models/causal_lm.h"
#include "prism/runtime/runtime.h"
#include "prism/train/model_setup.h"

namespace prism::train {
namespace {

using models::BlockKind;
using models::ModelConfig;

constexpr double kF32 = 4.0;

const char* dtype_label(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::BFloat16:
      return "bf16";
    case c10::ScalarType::Half:
      return "fp16";
    case c10::ScalarType::Double:
      return "fp64";
    default:
      return "fp32";
  }
}

std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, x >= 1e5 ? "%.3g" : "%.0f", x);
  return buf;
}

// Parameter sharding's units (optimizer.cpp ParamSharding, model_setup.cpp make_optimizer): every
// decoder layer's trained parameters are gathered on demand; the root unit (the trained parameters
// outside the layers: embeddings, final norm, lm head) stays gathered. Frozen parameters
// (train.trainable) are in no unit: resident, unsharded, without gradient or optimizer state.
struct Units {
  double total = 0;
  double trained = 0;         // elements train.trainable selects
  double root = 0;            // trained elements outside the decoder layers
  double largest_layer = 0;   // trained elements of the largest decoder layer
  double largest_matrix = 0;  // elements of the largest trained weight (its gradient is materialised once)
  double outside = 0;         // all elements outside the decoder layers (a sharded reference's root unit)
  bool lm_head_trained = true;
  bool embedding_trained = true;
  bool final_norm_trained = true;
  // Per layer and block: whether its pre-norm weight / its mixer has a trained parameter.
  std::vector<std::vector<std::pair<bool, bool>>> blocks;
};

Units units(const ModelConfig& c, const std::vector<std::string>& trainable) {
  // The trainer's own selection, on a model of the right shapes that allocates nothing.
  models::LoadOptions lo;
  lo.device = "meta";
  const auto meta = models::CausalLM::from_config(c, lo);
  const auto mask = trainable_mask(*meta, trainable);
  std::map<std::string, int64_t> layer_of;
  for (const auto& i : meta->parameter_infos()) layer_of[i.name] = i.layer;
  const auto& params = meta->named_parameters();
  const auto& head = meta->lm_head_weight();
  std::map<int64_t, double> per_layer;
  Units u;
  u.lm_head_trained = false;
  for (size_t k = 0; k < params.size(); ++k) {
    const double n = static_cast<double>(params[k].second.numel());
    u.total += n;
    if (auto it = layer_of.find(params[k].first); it == layer_of.end() || it->second < 0) u.outside += n;
    if (!mask[k]) continue;
    u.trained += n;
    u.largest_matrix = std::max(u.largest_matrix, n);
    if (params[k].second.is_same(head)) u.lm_head_trained = true;
    const auto it = layer_of.find(params[k].first);
    const int64_t layer = it == layer_of.end() ? -1 : it->second;
    if (layer < 0)
      u.root += n;
    else
      per_layer[layer] += n;
  }
  for (const auto& [l, n] : per_layer) u.largest_layer = std::max(u.largest_layer, n);
  std::map<std::string, bool> trained;
  for (size_t k = 0; k < params.size(); ++k) trained[params[k].first] = mask[k];
  auto any_with_prefix = [&](const std::string& prefix) {
    for (auto it = trained.lower_bound(prefix); it != trained.end() && it->first.rfind(prefix, 0) == 0; ++it)
      if (it->second) return true;
    return false;
  };
  auto is_trained = [&](const std::string& name) {
    auto it = trained.find(name);
    return it != trained.end() && it->second;
  };
  u.embedding_trained = is_trained(c.embed_name);
  u.final_norm_trained = is_trained(c.final_norm_name);
  for (const auto& layer : c.layers) {
    u.blocks.emplace_back();
    for (const auto& b : layer.blocks) u.blocks.back().emplace_back(is_trained(b.norm), any_with_prefix(b.prefix));
  }
  return u;
}

// Whether training runs ops' one-pass CPU autograd Functions (RMSNorm, SwiGLU: fp32 on the CPU).
bool cpu_training_ops(const MemoryPlanInput& in) { return !in.cuda && in.dtype == at::kFloat; }

// Bytes per token autograd keeps for one block (its pre-norm included) on the given path.
double block_bytes_per_token(const MemoryPlanInput& in, BlockKind kind, int64_t tokens) {
  const auto& c = in.model;
  const double e = static_cast<double>(c10::elementSize(in.dtype));
  const double D = static_cast<double>(c.hidden_size);
  // Pre-norm. Reference (rms_norm_ref): the fp32 input (its own copy unless fp32), the normalised
  // value before the weight multiply, rsqrt; the output is kept by the block's first linear.
  // Kernel: the input, rstd, the output.
  // CPU fp32 training runs one-pass autograd Functions (ops/rmsnorm_cpu.cpp, ops/swiglu.cpp): the
  // norm keeps its input and rstd only (the output is kept by the first linear).
  const bool cpu_train = cpu_training_ops(in);
  double b = in.cuda ? 2 * e * D + kF32 : (cpu_train ? kF32 * D + e * D + kF32 : kF32 * D + 2 * e * D + 2 * kF32);
  switch (kind) {
    case BlockKind::kAttention: {
      const double Hq = static_cast<double>(c.num_heads), d = static_cast<double>(c.head_dim);
      const double Dq = Hq * d, Dkv = static_cast<double>(c.num_kv_heads) * d;
      if (in.cuda) {
        // Fused flash attention: rotated q, k, v, the output and the fp32 log-sum-exp per head.
        b += e * (Dq + 2 * Dkv) + e * Dq + kF32 * Hq;
      } else {
        // SDPA after repeat_kv: q and the repeated k, v (copies unless one KV head per query
        // head), the output, logsumexp; then either one causal SDPA per packed document (full
        // attention: the per-document outputs and their concatenation, one more output per token)
        // or, with a sliding window, the packed-document mask converted to the dtype ([L, L] per
        // layer: tokens x e per token).
        const bool grouped = c.num_kv_heads != c.num_heads;
        const double packing = c.sliding_window == 0 ? e * Dq : e * static_cast<double>(tokens);
        b += e * (grouped ? 3 * Dq : Dq + 2 * Dkv) + e * Dq + kF32 * Hq + packing;
      }
      break;
    }
    case BlockKind::kMlp: {
      const double F = static_cast<double>(c.intermediate_size);
      // SwiGLU: gate (silu's input), silu(gate), up, their product (down's input); relu2: relu's
      // output and its square. ops::swiglu on CPU fp32 training recomputes silu(gate) in backward.
      const bool one_pass = cpu_train && c.mlp == models::MlpKind::kSwiGLU;
      b += e * F * (c.mlp == models::MlpKind::kRelu2 ? 2 : one_pass ? 3 : 4);
      break;
    }
    case BlockKind::kMamba2: {
      const auto& m = c.mamba;
      const double I = static_cast<double>(m.inner()), H = static_cast<double>(m.num_heads);
      const double GN = static_cast<double>(m.n_groups * m.state_size), C = static_cast<double>(m.conv_dim());
      const double Q = static_cast<double>(m.chunk_size), P = static_cast<double>(m.head_dim);
      const double state = H * P * static_cast<double>(m.state_size) / Q;  // chunk states per token
      b += e * (2 * I + 2 * GN + H);                                       // in_proj output (z, xBC, dt)
      if (in.cuda) {
        // Conv kernel: input and output; scan kernel: fp32 y and the chunk states; gated norm and out_proj inputs.
        b += 2 * e * C + 2 * kF32 * I + 2 * kF32 * state + 2 * e * I;
      } else {
        // causal_conv1d_ref: padded fp32 input, fp32 accumulator, output. ssd_scan_ref: x*dt,
        // the chunk-reshaped copies of x*dt and of x*decay, C.H, the y sum; the exp(segment sums)
        // and C.B*exp matrices ([H, Q] per token) and C.B ([G, Q]); padded B, C; the chunk states
        // and the states entering each chunk. Gated norm: silu(z), the product, the normalised
        // value; out_proj's input. (Counted op by op, then checked against the measured peak:
        // tests/train/test_plan.cpp.)
        b += 2 * kF32 * C + e * C;
        b += kF32 * I * 5;
        b += 2 * kF32 * H * Q + kF32 * static_cast<double>(m.n_groups) * Q + 2 * kF32 * GN;
        b += 3 * kF32 * state;
        b += 2 * kF32 * I + 2 * e * I;
      }
      break;
    }
  }
  return b;
}

struct Activations {
  double saved = 0;      // kept from forward to backward over all layers
  double one_layer = 0;  // the largest layer's saved tensors (recomputed under checkpointing)
  double working = 0;    // largest transient on top of `saved` (loss head or backward of a layer)
  double head = 0;       // the lm head's chunked loss (part of `working` or of the peak)
  std::string head_detail;
};

Activations activations(const MemoryPlanInput& in, bool checkpointing, const Units& u) {
  const auto& c = in.model;
  const double e = static_cast<double>(c10::elementSize(in.dtype));
  const double T = static_cast<double>(in.micro_batch_rows * in.seq_len);
  const double D = static_cast<double>(c.hidden_size), V = static_cast<double>(c.vocab_size);
  const int64_t tokens = in.micro_batch_rows * in.seq_len;
  Activations a;
  double all_layers = 0;
  // Frozen parameters (train.trainable) save less: autograd keeps a tensor only for a gradient it
  // will compute. Up to the first trained parameter nothing needs a gradient (nothing is kept);
  // a trained block without a gradient flowing in keeps only what its weights' gradients need; a
  // frozen block with a gradient flowing through it does not keep its linears' inputs (the
  // normalised input of its first linears, o_proj's / down's / out_proj's input) nor, with a
  // frozen norm weight, the normalised value before the weight multiply (ATen path).
  bool grad_in = u.embedding_trained;
  for (size_t li = 0; li < c.layers.size(); ++li) {
    double l = 0;
    for (size_t bi = 0; bi < c.layers[li].blocks.size(); ++bi) {
      const BlockKind kind = c.layers[li].blocks[bi].kind;
      const auto [norm_trained, mixer_trained] = u.blocks[li][bi];
      double b = block_bytes_per_token(in, kind, tokens);
      if (!grad_in && !norm_trained && !mixer_trained) {
        b = 0;
      } else {
        if (cpu_training_ops(in)) {
          // The one-pass norm keeps its input and rstd whenever it needs any gradient.
          if (!grad_in && !norm_trained) b -= kF32 * D + kF32;
        } else if (!grad_in) {
          b -= in.cuda ? e * D + kF32 : kF32 * D + e * D + 2 * kF32;  // the norm keeps nothing for itself
        } else if (!norm_trained && !in.cuda) {
          b -= e * D;
        }
        if (!mixer_trained) {
          b -= e * D;
          if (kind == BlockKind::kAttention && !in.cuda && c.sliding_window == 0)
            b -= e * static_cast<double>(c.num_heads * c.head_dim);
          else if (kind == BlockKind::kMlp)
            b -= e * static_cast<double>(c.intermediate_size);
          else if (kind == BlockKind::kMamba2)
            b -= e * static_cast<double>(c.mamba.inner());
        }
      }
      l += b;
      grad_in = grad_in || norm_trained || mixer_trained;
    }
    a.one_layer = std::max(a.one_layer, l * T);
    all_layers += l * T;
  }
  // Outside the layers: RoPE cos/sin tables, the final norm (as a pre-norm) and its output.
  const double rot = static_cast<double>(c.head_dim) * c.partial_rotary_factor;
  const double final_norm = in.cuda               ? 2 * e * D + kF32
                            : cpu_training_ops(in) ? kF32 * D + e * D + kF32
                                                   : kF32 * D + (u.final_norm_trained ? 2 : 1) * e * D;
  const double outside = T * ((c.use_rope ? 2 * e * rot : 0) + final_norm);
  // Checkpointing keeps each layer's input and recomputes one layer at a time in backward.
  a.saved = outside + (checkpointing ? static_cast<double>(c.num_layers()) * T * e * D : all_layers);
  // linear_cross_entropy: dH [T, D] and dW [V, D] stashed from forward to backward (an fp32
  // accumulator too for 16-bit weights), one [chunk, V] logits buffer and, on the ATen path, its
  // fp32 copy and at::logsumexp's fp32 temporary (ops/linear_head_chunks.cpp: 256 MiB of logits
  // per chunk at most; the CUDA kernel works in place).
  const double chunk_rows = std::min(T, std::max(1.0, std::floor(256.0 * 1024 * 1024 / (V * e))));
  // A frozen lm head gets no dW (the heads compute only the gradients autograd asks for).
  const double dw = u.lm_head_trained ? V * D * (e + (e < kF32 ? kF32 : 0)) : 0.0;
  if (in.job == "rl") {
    // GRPO's head (rl/rollout_batch.cpp token_logprobs, ops/linear_logprobs.cpp) runs on the rows
    // that predict a completion token: N = T x max_new / (max_new + shortest prompt - 1) at most
    // when the prompts are known, else all T. Forward keeps their hidden rows (a copy), fp32
    // log-prob, entropy, log-sum-exp and a saved entropy per row and, on the ATen path, the whole
    // [N, V] logits (up to 2 GiB); the log-probs and entropies scattered back to [T] fp32 and the
    // policy loss's fp32 per-token temporaries (ratio, clipped terms, KL, mask, ...: about 16)
    // live until backward. Backward: one [chunk, V] buffer (ATen: plus 3 fp32 copies of it), dH of
    // the N rows and of all T (index_select's backward), the dW accumulator.
    double N = T;
    if (in.prompt_tokens > 0 && in.max_new_tokens > 0) {
      const double shortest = static_cast<double>(std::max<int64_t>(1, in.shortest_prompt_tokens));
      const double mx = static_cast<double>(in.max_new_tokens);
      N = std::min(T, std::ceil(T * mx / (mx + shortest - 1)));
    }
    const double rows = std::min(N, chunk_rows);
    const double kept = !in.cuda && N * V * e <= 2.0 * 1024 * 1024 * 1024 ? N * V * e : 0.0;
    const double per_token = N * (D * e + 4 * kF32) + T * (2 * kF32 + 16 * kF32);
    const double chunk = rows * V * (e + (in.cuda ? 0 : 3 * kF32));
    a.head = per_token + kept + chunk + (N + T) * D * e + dw;
    a.head_detail = str(num(N), " completion rows: ", kept > 0 ? "kept logits " : "logits chunk ",
                        num(kept > 0 ? N : rows), " x ", num(V), " + dH + dW ", num(V), " x ", num(D));
  } else {
    const double logits = chunk_rows * V * (e + (in.cuda ? 0 : 2 * kF32));
    a.head = T * D * e + dw + logits;
    a.head_detail = str("logits ", num(chunk_rows), " x ", num(V), " + dH ", num(T), " x ", num(D), " + dW ", num(V),
                        " x ", num(D));
  }
  // Backward of one layer: the incoming and outgoing hidden gradients, the gradients of the
  // widest intermediates (three at a time) and one weight gradient before the hook moves it into
  // the fp32 bucket; under checkpointing also the recomputed layer's saved tensors.
  const double width = std::max({static_cast<double>(c.intermediate_size), static_cast<double>(c.mamba.inner()), D});
  double backward =
      T * e * (2 * D + 3 * width) + e * u.largest_matrix + T * D * e + (u.lm_head_trained ? V * D * e : 0.0);
  if (checkpointing) backward += a.one_layer;
  a.working = std::max(a.head, backward);
  return a;
}

std::string pct(double part, double whole) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}

}  // namespace

double MemoryPlan::total() const {
  double t = 0;
  for (const auto& i : items) t += i.bytes;
  return t;
}

const MemoryItem& MemoryPlan::biggest() const {
  PRISM_CHECK(!items.empty(), "MemoryPlan: no items");
  return *std::max_element(items.begin(), items.end(),
                           [](const MemoryItem& a, const MemoryItem& b) { return a.bytes < b.bytes; });
}

std::string format_bytes(double bytes) {
  char buf[32];
  const double gib = bytes / (1024.0 * 1024 * 1024);
  if (gib >= 1.0)
    std::snprintf(buf, sizeof buf, "%.2f GiB", gib);
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024));
  return buf;
}

double parse_byte_size(const std::string& s, const std::string& key) {
  static const std::vector<std::pair<std::string, double>> units = {{"KiB", 1024.0},
                                                                    {"MiB", 1024.0 * 1024},
                                                                    {"GiB", 1024.0 * 1024 * 1024},
                                                                    {"TiB", 1024.0 * 1024 * 1024 * 1024},
                                                                    {"KB", 1e3},
                                                                    {"MB", 1e6},
                                                                    {"GB", 1e9},
                                                                    {"TB", 1e12},
                                                                    {"B", 1.0}};
  double mult = 1.0;
  std::string digits = s;
  for (const auto& [u, m] : units) {
    if (s.size() > u.size() && s.compare(s.size() - u.size(), u.size(), u) == 0) {
      mult = m;
      digits = s.substr(0, s.size() - u.size());
      break;
    }
  }
  try {
    size_t pos = 0;
    const double v = std::stod(digits, &pos);
    if (pos == digits.size() && v >= 0 && std::isfinite(v)) return v * mult;
  } catch (const std::exception&) {
  }
  throw Error("invalid size", key_context("", key, "e.g. 80GB, 24GiB, 500MB", s));
}

MemoryPlan plan_memory(const MemoryPlanInput& in) {
  PRISM_CHECK(in.world_size >= 1, "memory plan: world size must be >= 1, got ", in.world_size);
  if (in.shard_size < 1 || in.world_size % in.shard_size != 0)
    throw Error(str("the shard size must divide the world size (", in.world_size, " ranks)"),
                key_context("", "dist.shard_size", str("a divisor of ", in.world_size), std::to_string(in.shard_size)));
  PRISM_CHECK(in.seq_len > 0 && in.micro_batch_rows > 0, "memory plan: tokens per micro-batch must be > 0 (",
              in.micro_batch_rows, " rows x ", in.seq_len, ")");
  MemoryPlan p;
  p.input = in;
  const auto u = units(in.model, in.trainable);
  const double e = static_cast<double>(c10::elementSize(in.dtype));
  const double P = u.trained, frozen = u.total - u.trained;
  const double S = static_cast<double>(in.shard_size), W = static_cast<double>(in.world_size);
  const std::string dt = dtype_label(in.dtype);
  const bool sharded = in.shard_size > 1;
  const std::string frozen_note = frozen > 0 ? str(" + ", num(frozen), " frozen x ", e, " B (resident)") : "";
  // Optimizer state is split over the parameter-sharding group (FSDP2 / HSDP keep it per group
  // and replicate it across groups); without parameter sharding ZeRO-1 splits it over the world.
  const double opt_split = sharded ? S : (in.zero1 ? W : 1.0);
  const std::string split_name = sharded ? "shard_size" : (in.zero1 && W > 1 ? "world, ZeRO-1" : "not sharded");
  if (sharded) {
    // The root unit and frozen parameters stay gathered; the layers' trained shards (fp32: the
    // master copy itself) between uses.
    const double layers = P - u.root;
    p.items.push_back({"parameters", (u.root + frozen) * e + (e == kF32 ? 0.0 : layers * e / S),
                       str(num(u.root), " x ", e, " B (", dt, ", root unit, gathered) + ", num(layers), " x ", e,
                           " B / ", num(S), e == kF32 ? " (= master)" : "", frozen_note)});
  } else {
    p.items.push_back({"parameters", u.total * e, str(num(u.total), " x ", e, " B (", dt, ")")});
  }
  // fp32 parameters on one rank are their own master copy (optimizer.cpp aliases them).
  const bool aliased = !sharded && e == kF32 && opt_split == 1;
  const std::string of_trained = frozen > 0 ? " trained" : "";
  p.items.push_back({"master weights", aliased ? 0.0 : P * kF32 / opt_split,
                     aliased ? "fp32 parameters are the master copy"
                             : str(num(P), of_trained, " x 4 B / ", num(opt_split), " (", split_name, ")")});
  if (sharded) {
    // The root unit's fp32 buffer lives through backward (lm head first, embedding last).
    p.items.push_back({"gradients", P * kF32 / S + u.root * kF32,
                       str(num(P), of_trained, " x 4 B / ", num(S), " (sharded fp32 accumulators) + ", num(u.root),
                           " x 4 B (the root unit's buffer in backward)")});
  } else {
    // The fp32 buckets hold the whole gradient; ZeRO-1 adds the reduced piece it owns.
    const double piece = opt_split > 1 ? P * kF32 / opt_split : 0.0;
    p.items.push_back({"gradients", P * kF32 + piece,
                       str(num(P), of_trained, " x 4 B (fp32 buckets)",
                           piece > 0 ? str(" + the owned piece / ", num(opt_split)) : "")});
  }
  p.items.push_back({"optimizer state", 2 * P * kF32 / opt_split,
                     str("AdamW 2 x ", num(P), of_trained, " x 4 B / ", num(opt_split))});
  const Activations full = activations(in, false, u), ckpt = activations(in, true, u);
  p.activations_full = full.saved;
  p.activations_checkpointed = ckpt.saved;
  const Activations& act = in.activation_checkpointing ? ckpt : full;
  const double T = static_cast<double>(in.micro_batch_rows * in.seq_len);
  p.items.push_back({"activations", act.saved,
                     str(num(T), " tokens, ", in.activation_checkpointing ? "checkpointed" : "not checkpointed", " (",
                         format_bytes(ckpt.saved), " checkpointed / ", format_bytes(full.saved), " not)")});
  const double bw = act.working - act.head;
  p.items.push_back({"loss head + backward", act.working,
                     act.head >= bw
                         ? str(in.job == "rl" ? "lm head log-probs: " : "lm head chunked loss: ", act.head_detail)
                         : "backward of one layer"});
  if (sharded) {
    // The gathered current and prefetched layer (compute dtype) and two reduce-scatters in flight
    // (the layer's fp32 gradient and the fp32 piece it reduces into).
    const double L = u.largest_layer;
    p.items.push_back({"communication buffers", 2 * L * e + 2 * (L * kF32 + L * kF32 / S),
                       str("2 gathered layers + 2 reduce-scatters in flight (", num(L), " params per layer)")});
  } else {
    p.items.push_back({"communication buffers", 0.0, "none: the fp32 buckets are reduced in place"});
  }
  if (in.optimizer_update_check) {
    // update_ratio: two fp32 temporaries of one segment (a parameter's owned range, at most 4M
    // elements); it runs after backward, so only what exceeds the freed activations counts.
    const double chunk = std::min({u.largest_matrix, P / opt_split, 4194304.0});
    p.items.push_back({"optimizer temporaries", std::max(0.0, 2 * chunk * kF32 - act.saved - act.working),
                       "update-size guard: 2 fp32 copies of the largest segment, beyond the freed activations"});
  }
  // A rollout is at most the longest prompt + max_new_tokens (when known) and at most decode_length.
  const int64_t rollout_len = in.prompt_tokens > 0 && in.max_new_tokens > 0
                                  ? std::min(in.decode_length, in.prompt_tokens + in.max_new_tokens)
                                  : in.decode_length;
  if (in.decode_rows > 0 && rollout_len > 0) {
    const auto& c = in.model;
    double per_row = 0;
    for (const auto& layer : c.layers)
      for (const auto& b : layer.blocks) {
        if (b.kind == BlockKind::kAttention)
          per_row += 2.0 * static_cast<double>(c.num_kv_heads * c.head_dim) * static_cast<double>(rollout_len) * e;
        else if (b.kind == BlockKind::kMamba2)
          per_row += static_cast<double>(c.mamba.conv_dim() * (c.mamba.conv_kernel - 1)) * e +
                     static_cast<double>(c.mamba.num_heads * c.mamba.head_dim * c.mamba.state_size) * kF32;
      }
    p.items.push_back({"decode cache", per_row * static_cast<double>(in.decode_rows),
                       str(in.decode_rows, " rows x ", rollout_len, " tokens (KV, conv, SSM state)",
                           rollout_len < in.decode_length ? " (the longest prompt + max_new_tokens)" : "")});
  }
  if (in.reference_model) {
    // A frozen copy of the whole policy (also of parameters train.trainable freezes); under
    // parameter sharding sharded like the policy (its layers between uses, the rest gathered).
    if (sharded)
      p.items.push_back({"reference model", u.outside * e + (u.total - u.outside) * e / S,
                         str("frozen: ", num(u.outside), " x ", e, " B gathered + ", num(u.total - u.outside), " x ", e,
                             " B / ", num(S), " (kl.beta > 0)")});
    else
      p.items.push_back({"reference model", u.total * e, str("frozen ", num(u.total), " x ", e, " B (kl.beta > 0)")});
  }
  if (in.job == "rl" && in.rollouts_per_rank > 0 && rollout_len > 0) {
    // The step's packed micro-batches, all alive from packing to the last update: input ids,
    // positions, labels, sequence ids (int64), mask (bool), advantages and sampler log-probs
    // (fp32) per token, plus the reference's and the pre-update policy's fp32 log-probs.
    const double tokens = static_cast<double>(in.rollouts_per_rank) * static_cast<double>(rollout_len);
    const double per = 4 * 8 + 1 + 2 * kF32 + (in.reference_model ? kF32 : 0) + (in.mini_batches > 1 ? kF32 : 0);
    p.items.push_back({"rollout batch", tokens * per,
                       str(in.rollouts_per_rank, " rollouts x ", rollout_len, " tokens x ", per,
                           " B (ids, labels, masks, advantages, fp32 log-probs)")});
  }
  if (in.job == "rl" && sharded) {
    // Rollouts decode with the policy's layers gathered (every trained layer in the compute dtype
    // beyond its shard); the update's activations, loss head and gather buffers are not alive then.
    const double layers = P - u.root;
    const double update = act.saved + act.working;
    double comm = 0;
    for (const auto& i : p.items)
      if (i.name == "communication buffers") comm = i.bytes;
    p.items.push_back({"rollout: gathered policy", std::max(0.0, layers * e - update - comm),
                       str(num(layers), " x ", e, " B gathered for decoding, beyond the update's transients")});
  }
  return p;
}

void set_rl_step(MemoryPlanInput& in, int64_t prompts_per_step, int64_t samples_per_prompt, int64_t mini_batches,
                 const std::vector<std::string>& trainable, int64_t max_new_tokens, int64_t shortest_prompt,
                 int64_t longest_prompt) {
  in.rollouts_per_rank = prompts_per_step / std::max<int64_t>(1, in.world_size) * samples_per_prompt;
  in.mini_batches = mini_batches;
  in.trainable = trainable;
  in.max_new_tokens = max_new_tokens;
  in.shortest_prompt_tokens = shortest_prompt;
  in.prompt_tokens = longest_prompt;
}

std::string format_plan(const MemoryPlan& plan, double device_bytes) {
  const auto& in = plan.input;
  std::ostringstream os;
  const double total = plan.total();
  os << "memory plan per rank: " << in.model.model_type << " (" << num(models::CausalLM::parameter_count(in.model))
     << " params, " << dtype_label(in.dtype) << ", " << (in.cuda ? "CUDA kernels" : "ATen reference ops") << "), "
     << in.world_size << " ranks = shard " << in.shard_size << " x replicate " << in.world_size / in.shard_size
     << ", micro-batch " << in.micro_batch_rows << " x " << in.seq_len << " tokens, activation checkpointing "
     << (in.activation_checkpointing ? "on" : "off") << "\n";
  for (const auto& i : plan.items) {
    char line[96];
    std::snprintf(line, sizeof line, "  %-24s %12s %5s  ", i.name.c_str(), format_bytes(i.bytes).c_str(),
                  pct(i.bytes, total).c_str());
    os << line << i.detail << "\n";
  }
  char line[96];
  std::snprintf(line, sizeof line, "  %-24s %12s", "total (peak)", format_bytes(total).c_str());
  os << line;
  if (device_bytes > 0)
    os << (total <= device_bytes ? "  fits in " : "  does NOT fit in ") << format_bytes(device_bytes) << " ("
       << pct(total, device_bytes) << ")";
  os << "\n";
  return os.str();
}

std::optional<MemoryPlanInput> suggest_layout(const MemoryPlanInput& in, double device_bytes) {
  auto fits = [&](const MemoryPlanInput& x) { return plan_memory(x).total() <= device_bytes; };
  for (int64_t s = 1; s <= in.world_size; s *= 2) {
    if (in.world_size % s != 0) continue;
    MemoryPlanInput x = in;
    x.shard_size = s;
    for (bool ac : {false, true}) {
      x.activation_checkpointing = ac;
      x.micro_batch_rows = in.micro_batch_rows;
      x.decode_rows = in.decode_rows;
      if (fits(x)) return x;
    }
    // Smaller micro-batches (mid: fewer rows, more grad_accum) or fewer decode slots (GRPO).
    while (x.micro_batch_rows > 1 || x.decode_rows > 2) {
      if (x.micro_batch_rows > 1)
        x.micro_batch_rows /= 2;
      else
        x.decode_rows = (x.decode_rows - 1) / 2 + 1;  // slots halved, the prefix row kept
      if (fits(x)) return x;
    }
  }
  return std::nullopt;
}

std::string layout_change(const MemoryPlanInput& from, const MemoryPlanInput& to) {
  std::vector<std::string> parts;
  if (to.shard_size != from.shard_size) {
    parts.push_back(str("dist.shard_size=", to.shard_size));
    parts.push_back(str("dist.replicate_size=", to.world_size / to.shard_size));
  }
  if (to.activation_checkpointing != from.activation_checkpointing)
    parts.push_back(str("model.activation_checkpointing=", to.activation_checkpointing ? "true" : "false"));
  if (to.micro_batch_rows != from.micro_batch_rows)
    parts.push_back(str("data.micro_batch_size=", to.micro_batch_rows, " (raise train.grad_accum x",
                        from.micro_batch_rows / to.micro_batch_rows, " to keep the global batch)"));
  if (to.decode_rows != from.decode_rows) parts.push_back(str("rollout.slots=", to.decode_rows - 1));
  if (parts.empty()) return "the configured layout";
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? " " : "") + std::string("--set ") + parts[i];
  return s;
}

MemoryPlanInput plan_input(const MidTrainConfig& cfg, const models::ModelConfig& model, int64_t world_size,
                           const std::string& device) {
  MemoryPlanInput in;
  in.model = model;
  in.dtype = cfg.model.dtype == Dtype::kBf16 ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
  in.cuda = device.rfind("cuda", 0) == 0 && cfg.model.kernels == Kernels::kAuto;
  in.world_size = world_size;
  in.shard_size = cfg.dist.shard_size;
  in.zero1 = cfg.optimizer.zero1;
  in.bucket_mb = cfg.optimizer.bucket_mb;
  in.activation_checkpointing = cfg.model.activation_checkpointing;
  in.seq_len = cfg.data.seq_len;
  in.micro_batch_rows = cfg.data.micro_batch_size;
  if (in.seq_len == 0 || in.micro_batch_rows == 0) {
    const auto mix = config::load_config<data::MixtureConfig>(cfg.data.mixture);
    if (in.seq_len == 0) in.seq_len = mix.seq_len;
    if (in.micro_batch_rows == 0) in.micro_batch_rows = mix.batch_size;
  }
  in.optimizer_update_check = cfg.train.max_update_ratio > 0;
  in.trainable = cfg.train.trainable;
  in.job = "mid";
  return in;
}

double device_memory_budget(const std::string& configured, const c10::Device& device, const std::string& key) {
  if (!configured.empty()) return parse_byte_size(configured, key);
  return static_cast<double>(runtime::available_memory_bytes(device));
}

void check_plan_fits(const MemoryPlanInput& in, double device_bytes, const std::string& config_file, bool log_plan) {
  const MemoryPlan plan = plan_memory(in);
  if (log_plan) log::info(format_plan(plan, device_bytes));
  if (device_bytes <= 0 || plan.total() <= device_bytes) return;
  const auto& big = plan.biggest();
  const auto fix = suggest_layout(in, device_bytes);
  throw Error(str("the run does not fit: the plan needs ", format_bytes(plan.total()), " per rank but the device has ",
                  format_bytes(device_bytes), "; the biggest item is ", big.name, " (", format_bytes(big.bytes), ": ",
                  big.detail, "); ",
                  fix ? "a layout that fits: " + layout_change(in, *fix)
                      : str("no layout fits on ", in.world_size, " ranks: add ranks and shard the parameters"),
                  " (prism-train plan --config ", config_file.empty() ? "<config>" : config_file, " shows the table)"),
              key_context(config_file, "model.device_memory"));
}

}  // namespace prism::train
