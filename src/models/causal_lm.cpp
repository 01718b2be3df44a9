// The generic decoder: builds parameters from a ModelConfig's layer list, loads/saves them by HF
// name, and runs the forward for padded, packed and cached inputs. Numerics follow transformers'
// modeling files step by step (architectures.md §1, §3): bf16 roundings happen where HF rounds.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <set>
#include <sstream>
#include <unistd.h>

#include "models/activation_checkpoint.h"
#include "models/family.h"
#include "models/init.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "prism/models/checkpoint_files.h"
#include "prism/models/memory.h"
#include "prism/runtime/runtime.h"
#include "prism/ops/attention.h"
#include "prism/ops/causal_conv1d.h"
#include "prism/ops/ssd_scan.h"
#include "prism/ops/rmsnorm.h"
#include "prism/ops/rotary.h"
#include "prism/ops/swiglu.h"

namespace prism::models {
namespace {

struct AttentionWeights {
  at::Tensor q, k, v, o;          // [Hq*d, D], [Hkv*d, D], [Hkv*d, D], [D, Hq*d]
  at::Tensor q_b, k_b, v_b, o_b;  // optional biases
};

struct MlpWeights {
  at::Tensor gate, up, down;          // SwiGLU: [F, D], [F, D], [D, F]; relu2 uses up/down
  at::Tensor gate_b, up_b, down_b;    // optional biases (mlp_bias)
  at::Tensor gate_up, out;            // fused SwiGLU (Granite 4): [2F, D], [D, F]
};

struct Mamba2Weights {
  at::Tensor in_proj, in_proj_b;    // [2I + 2GN + H, D]: [z | x B C | dt]
  at::Tensor conv_w, conv_b;        // [conv_dim, 1, K], [conv_dim]
  at::Tensor dt_bias, A_log, D;     // [H] each
  at::Tensor norm;                  // [I] gated RMSNorm weight
  at::Tensor out_proj, out_proj_b;  // [D, I]
};

struct Block {
  BlockKind kind;
  at::Tensor norm;  // [D]
  AttentionWeights attn;
  MlpWeights mlp;
  Mamba2Weights mamba;
  int cache_slot = -1;  // index into DecodeState keys/values (attention) or conv/ssm states (mamba)
};

struct ParamSlot {
  std::string name;
  std::vector<int64_t> shape;
  at::Tensor* slot;
  const char* kind;  // embedding | attention | mlp | mamba2 | norm | lm_head (for inspect's breakdown)
  InitKind init;     // what init_weights draws for it
  ParameterKind pkind;  // what training rules see (weight decay)
  const char* role;     // family-independent part name (ParameterInfo::role)
  int64_t layer;        // -1 outside the decoder layers
};

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// Python's json.dumps writes Infinity / -Infinity / NaN (transformers does for time_step_limit),
// which strict JSON parsers reject: map them (outside strings) to +-1e308 and null.
std::string sanitize_python_json(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  bool in_str = false;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (in_str) {
      out += c;
      if (c == '\\' && i + 1 < in.size()) out += in[++i];
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    if (in.compare(i, 9, "-Infinity") == 0) out += "-1e308", i += 8;
    else if (in.compare(i, 8, "Infinity") == 0) out += "1e308", i += 7;
    else if (in.compare(i, 3, "NaN") == 0) out += "null", i += 2;
    else out += c;
  }
  return out;
}

}  // namespace

struct CausalLM::Impl {
  ModelConfig cfg;
  c10::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  std::string source_dir;
  at::Tensor embed, final_norm, lm_head;
  std::vector<std::vector<Block>> layers;
  std::vector<ParamSlot> slots;
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<ParameterKind> param_kinds;  // aligned with params
  std::shared_ptr<LayerHooks> hooks;       // parameter sharding (set_layer_hooks); null: none
  at::Tensor inv_freq;
  int num_attention_blocks = 0;
  int num_mamba_blocks = 0;

  const char* declaring_kind = "";
  int64_t declaring_layer = -1;
  // The training kind follows from where and how a parameter is declared; only Mamba2's D (a 1-D
  // tensor initialised like a norm weight) needs saying.
  void declare(const std::string& name, std::vector<int64_t> shape, at::Tensor& slot, InitKind init, const char* role,
               std::optional<ParameterKind> pkind = std::nullopt) {
    if (!pkind) {
      const std::string_view k = declaring_kind;
      pkind = k == "embedding"                                                ? ParameterKind::kEmbedding
              : k == "lm_head"                                                ? ParameterKind::kLmHead
              : init == InitKind::kZeros                                      ? ParameterKind::kBias
              : init == InitKind::kMambaALog || init == InitKind::kMambaDtBias ? ParameterKind::kSsm
              : shape.size() <= 1                                             ? ParameterKind::kNorm
                                                                              : ParameterKind::kMatrix;
    }
    slots.push_back({name, std::move(shape), &slot, declaring_kind, init, *pkind, role, declaring_layer});
  }
  /// An nn.Linear: `<name>.weight` [out, in] and, when `bias`, `<name>.bias` [out].
  void declare_linear(const std::string& name, const char* role, int64_t out, int64_t in, bool bias, at::Tensor& w,
                      at::Tensor& b, InitKind w_init = InitKind::kNormal) {
    declare(name + ".weight", {out, in}, w, w_init, role);
    if (bias) declare(name + ".bias", {out}, b, InitKind::kZeros, role);
  }

  void build_slots() {
    const auto& c = cfg;
    const int64_t D = c.hidden_size, F = c.intermediate_size, d = c.head_dim;
    const int64_t q_out = c.num_heads * d, kv_out = c.num_kv_heads * d;
    declaring_kind = "embedding";
    declare(c.embed_name, {c.vocab_size, D}, embed, InitKind::kEmbedding, "embed");
    layers.resize(c.layers.size());
    for (size_t i = 0; i < c.layers.size(); ++i) {
      auto& L = layers[i];
      declaring_layer = static_cast<int64_t>(i);
      L.resize(c.layers[i].blocks.size());
      for (size_t j = 0; j < L.size(); ++j) {
        const auto& spec = c.layers[i].blocks[j];
        auto& b = L[j];
        b.kind = spec.kind;
        declaring_kind = "norm";
        declare(spec.norm, {D}, b.norm, InitKind::kOnes, "norm");
        declaring_kind = block_kind_name(spec.kind);
        const std::string& p = spec.prefix;
        if (spec.kind == BlockKind::kAttention) {
          b.cache_slot = num_attention_blocks++;
          declare_linear(p + "q_proj", "q", q_out, D, c.attention_bias, b.attn.q, b.attn.q_b);
          declare_linear(p + "k_proj", "k", kv_out, D, c.attention_bias, b.attn.k, b.attn.k_b);
          declare_linear(p + "v_proj", "v", kv_out, D, c.attention_bias, b.attn.v, b.attn.v_b);
          declare_linear(p + "o_proj", "o", D, q_out, c.attention_bias, b.attn.o, b.attn.o_b);
        } else if (spec.kind == BlockKind::kMlp) {
          switch (c.mlp) {
            case MlpKind::kSwiGLU:
              declare_linear(p + "gate_proj", "gate", F, D, c.mlp_bias, b.mlp.gate, b.mlp.gate_b);
              declare_linear(p + "up_proj", "up", F, D, c.mlp_bias, b.mlp.up, b.mlp.up_b);
              declare_linear(p + "down_proj", "down", D, F, c.mlp_bias, b.mlp.down, b.mlp.down_b);
              break;
            case MlpKind::kFusedSwiGLU:
              declare(p + "input_linear.weight", {2 * F, D}, b.mlp.gate_up, InitKind::kNormal, "gate_up");
              declare(p + "output_linear.weight", {D, F}, b.mlp.out, InitKind::kNormal, "down");
              break;
            case MlpKind::kRelu2:
              declare_linear(p + "up_proj", "up", F, D, c.mlp_bias, b.mlp.up, b.mlp.up_b);
              declare_linear(p + "down_proj", "down", D, F, c.mlp_bias, b.mlp.down, b.mlp.down_b);
              break;
          }
        } else {  // kMamba2
          const auto& m = c.mamba;
          const int64_t I = m.inner(), H = m.num_heads, proj = 2 * I + 2 * m.n_groups * m.state_size + H;
          b.cache_slot = num_mamba_blocks++;
          declare_linear(p + "in_proj", "in_proj", proj, D, m.proj_bias, b.mamba.in_proj, b.mamba.in_proj_b);
          declare(p + "conv1d.weight", {m.conv_dim(), 1, m.conv_kernel}, b.mamba.conv_w, InitKind::kNormal, "conv1d");
          if (m.conv_bias) declare(p + "conv1d.bias", {m.conv_dim()}, b.mamba.conv_b, InitKind::kZeros, "conv1d");
          declare(p + "dt_bias", {H}, b.mamba.dt_bias, InitKind::kMambaDtBias, "dt_bias");
          declare(p + "A_log", {H}, b.mamba.A_log, InitKind::kMambaALog, "A_log");
          declare(p + "D", {H}, b.mamba.D, InitKind::kOnes, "D", ParameterKind::kSsm);
          declare(p + "norm.weight", {I}, b.mamba.norm, InitKind::kOnes, "gated_norm");
          declare_linear(p + "out_proj", "out_proj", D, I, m.proj_bias, b.mamba.out_proj, b.mamba.out_proj_b,
                         c.rescale_prenorm_residual ? InitKind::kResidualOut : InitKind::kNormal);
        }
      }
    }
    declaring_layer = -1;
    declaring_kind = "norm";
    declare(c.final_norm_name, {D}, final_norm, InitKind::kOnes, "norm");
    declaring_kind = "lm_head";
    if (!c.tie_word_embeddings) declare(c.lm_head_name, {c.vocab_size, D}, lm_head, InitKind::kNormal, "lm_head");
  }

  void finish() {
    if (cfg.tie_word_embeddings) lm_head = embed;
    params.clear();
    param_kinds.clear();
    for (auto& s : slots) {
      params.emplace_back(s.name, *s.slot);
      param_kinds.push_back(s.pkind);
    }
    if (cfg.use_rope && device.type() != at::kMeta) {
      ops::RopeConfig rc;
      rc.type = cfg.rope_type;
      rc.theta = cfg.rope_theta;
      rc.dim = static_cast<int64_t>(cfg.head_dim * cfg.partial_rotary_factor);
      rc.factor = cfg.rope_factor;
      rc.low_freq_factor = cfg.rope_low_freq_factor;
      rc.high_freq_factor = cfg.rope_high_freq_factor;
      rc.original_max_position_embeddings = cfg.rope_original_max_position_embeddings;
      inv_freq = ops::rope_inv_freq(rc, device);
    }
  }

  double attn_scale() const {
    return cfg.attention_multiplier ? *cfg.attention_multiplier : 1.0 / std::sqrt(static_cast<double>(cfg.head_dim));
  }

  // x @ w^T (+ b); with decode weights, through w's decode copy (MKL-packed or [in, out]), which
  // MKL multiplies without re-packing the weight on every call.
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const DecodeWeights* dw) const {
    if (dw) {
      if (auto y = dw->linear(x, w, b); y.defined()) return y;
    }
    return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
  }

  at::Tensor mlp_forward(const Block& b, const at::Tensor& x, const DecodeWeights* dw) const {
    switch (cfg.mlp) {
      case MlpKind::kSwiGLU:
        return linear(ops::swiglu(linear(x, b.mlp.gate, b.mlp.gate_b, dw), linear(x, b.mlp.up, b.mlp.up_b, dw)),
                      b.mlp.down, b.mlp.down_b, dw);
      case MlpKind::kFusedSwiGLU: {
        auto gu = linear(x, b.mlp.gate_up, {}, dw).chunk(2, -1);  // [gate | up]
        return linear(at::silu(gu[0]) * gu[1], b.mlp.out, {}, dw);
      }
      case MlpKind::kRelu2: {
        auto h = at::relu(linear(x, b.mlp.up, b.mlp.up_b, dw));
        return linear(h * h, b.mlp.down, b.mlp.down_b, dw);
      }
    }
    return {};
  }

  // Where a forward call's rows live in a DecodeState: rows [row0, row0 + B) holding `past` tokens
  // each (uniform) or lens[b] tokens (ragged, L == 1 only); and the decode-time weight copies.
  struct StateRows {
    DecodeState* state = nullptr;
    int64_t row0 = 0;
    bool uniform = true;
    int64_t past = 0;         // uniform: tokens already held by every row
    bool any_past = false;    // some row holds tokens (Mamba2 states are live)
    int64_t key_len = 0;      // keys visible to this call: max row length after appending
    at::Tensor write_index;   // ragged: [B, 1, 1, 1] int64 position of each row's new key
    const DecodeWeights* weights = nullptr;  // ForwardOptions::decode_weights
  };

  at::Tensor attention_forward(const Block& b, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                               ops::AttentionParams params, const StateRows& sr) const {
    const int64_t B = x.size(0), L = x.size(1), d = cfg.head_dim;
    auto q = linear(x, b.attn.q, b.attn.q_b, sr.weights).view({B, L, cfg.num_heads, d}).transpose(1, 2);
    auto k = linear(x, b.attn.k, b.attn.k_b, sr.weights).view({B, L, cfg.num_kv_heads, d}).transpose(1, 2);
    auto v = linear(x, b.attn.v, b.attn.v_b, sr.weights).view({B, L, cfg.num_kv_heads, d}).transpose(1, 2);
    if (cos.defined()) {
      q = ops::apply_rope(q, cos, sin);
      k = ops::apply_rope(k, cos, sin);
    }
    if (sr.state) {
      auto kb = sr.state->keys()[b.cache_slot].narrow(0, sr.row0, B);
      auto vb = sr.state->values()[b.cache_slot].narrow(0, sr.row0, B);
      if (sr.uniform) {
        kb.narrow(2, sr.past, L).copy_(k);
        vb.narrow(2, sr.past, L).copy_(v);
      } else {
        auto idx = sr.write_index.expand({B, cfg.num_kv_heads, 1, d});
        kb.scatter_(2, idx, k);
        vb.scatter_(2, idx, v);
      }
      k = kb.narrow(2, 0, sr.key_len);
      v = vb.narrow(2, 0, sr.key_len);
    }
    auto o = ops::attention(q, k, v, params);  // [B, Hq, L, d]
    o = o.transpose(1, 2).reshape({B, L, cfg.num_heads * d});
    return linear(o, b.attn.o, b.attn.o_b, sr.weights);
  }

  // Mamba2 mixer (architectures.md §2.3-2.6; transformers' torch path): in_proj, causal conv +
  // SiLU over [x B C], dt = clamp(softplus(dt + dt_bias)), chunked SSD scan (fp32), gated RMSNorm,
  // out_proj. Padding positions are zeroed before in_proj and after the conv, as in HF, so left
  // padding leaves the state untouched.
  at::Tensor mamba_forward(const Block& b, const at::Tensor& x_in, const at::Tensor& token_mask,
                           const at::Tensor& cu_seqlens, const StateRows& sr, ops::Impl impl) const {
    const auto& m = cfg.mamba;
    const int64_t B = x_in.size(0), L = x_in.size(1), I = m.inner(), H = m.num_heads, P = m.head_dim;
    const int64_t G = m.n_groups, N = m.state_size;
    auto x = token_mask.defined() ? x_in * token_mask.unsqueeze(-1).to(x_in.scalar_type()) : x_in;
    auto zxbcdt = linear(x, b.mamba.in_proj, b.mamba.in_proj_b, sr.weights);
    auto parts = zxbcdt.split_with_sizes({I, m.conv_dim(), H}, -1);
    auto z = parts[0], xbc = parts[1], dt_raw = parts[2];

    ops::CausalConv1dParams cp;
    cp.cu_seqlens = cu_seqlens;
    cp.silu = true;
    cp.impl = impl;
    at::Tensor conv_state, ssm_state;  // this call's rows of the decode state (views)
    if (sr.state) {
      conv_state = sr.state->conv_states()[b.cache_slot].narrow(0, sr.row0, B);
      ssm_state = sr.state->ssm_states()[b.cache_slot].narrow(0, sr.row0, B);
      if (sr.any_past) cp.initial_state = conv_state;
    }
    auto conv = ops::causal_conv1d(xbc.transpose(1, 2), b.mamba.conv_w, b.mamba.conv_b, cp);
    if (sr.state) conv_state.copy_(conv.final_state);
    xbc = conv.out.transpose(1, 2);  // [B, L, conv_dim]
    if (token_mask.defined()) xbc = xbc * token_mask.unsqueeze(-1).to(xbc.scalar_type());
    auto xs = xbc.split_with_sizes({I, G * N, G * N}, -1);

    auto A = -at::exp(b.mamba.A_log.to(at::kFloat));  // [H] fp32
    auto dt = at::softplus(dt_raw + b.mamba.dt_bias);  // in the activation dtype, as HF
    if (m.dt_min > 0.0 || m.dt_max > 0.0)
      dt = m.dt_max > 0.0 ? dt.clamp(m.dt_min, m.dt_max) : dt.clamp_min(m.dt_min);

    at::Tensor y;  // [B, L, H, P] fp32
    // Rows that hold no tokens yet have zeroed states, so one step serves a ragged batch.
    if (sr.state && L == 1 && sr.any_past) {
      y = ops::ssd_step(ssm_state, xs[0].view({B, H, P}), dt.view({B, H}), A, xs[1].view({B, G, N}), xs[2].view({B, G, N}),
                        b.mamba.D, impl)
              .unsqueeze(1);
    } else {
      ops::SsdScanParams sp;
      sp.chunk_size = m.chunk_size;
      sp.cu_seqlens = cu_seqlens;
      sp.impl = impl;
      if (sr.any_past) sp.initial_state = ssm_state;
      auto r = ops::ssd_scan(xs[0].view({B, L, H, P}), dt, A, xs[1].view({B, L, G, N}), xs[2].view({B, L, G, N}),
                             b.mamba.D, sp);
      if (sr.state) ssm_state.copy_(r.final_state);
      y = r.y;
    }
    auto yn = ops::rms_norm_gated(y.reshape({B, L, I}), z, b.mamba.norm, I / G, m.norm_eps, impl);
    return linear(yn.to(dtype), b.mamba.out_proj, b.mamba.out_proj_b, sr.weights);
  }

  // What every block of a forward call shares besides the hidden state.
  struct LayerContext {
    at::Tensor cos, sin;      // RoPE tables [B, L, rot] (undefined without RoPE)
    ops::AttentionParams ap;  // scale, window, masks, cu_seqlens
    at::Tensor token_mask;    // [B, L] Mamba2 padding rule (undefined = all tokens)
    StateRows state;          // no state under activation checkpointing
    ops::Impl impl = ops::Impl::kAuto;  // ForwardOptions::impl (kernels or the ATen references)
  };

  // One decoder layer (one hidden_states entry): its residual blocks in order.
  at::Tensor layer_forward(size_t i, at::Tensor h, const LayerContext& c) const {
    for (const auto& b : layers[i]) {
      auto x = ops::rms_norm(h, b.norm, cfg.norm_eps, c.impl);
      at::Tensor y;
      switch (b.kind) {
        case BlockKind::kAttention: y = attention_forward(b, x, c.cos, c.sin, c.ap, c.state); break;
        case BlockKind::kMlp: y = mlp_forward(b, x, c.state.weights); break;
        case BlockKind::kMamba2: y = mamba_forward(b, x, c.token_mask, c.ap.cu_seqlens, c.state, c.impl); break;
      }
      h = cfg.residual_multiplier != 1.0 ? h + y * cfg.residual_multiplier : h + y;
    }
    return h;
  }

  // Every parameter tensor layer i reads (the explicit inputs of its checkpoint).
  std::vector<at::Tensor> layer_params(size_t i) const {
    std::vector<at::Tensor> ps;
    auto add = [&](std::initializer_list<const at::Tensor*> ts) {
      for (const auto* t : ts)
        if (t->defined()) ps.push_back(*t);
    };
    for (const auto& b : layers[i]) {
      const auto& a = b.attn;
      const auto& m = b.mlp;
      const auto& s = b.mamba;
      add({&b.norm, &a.q, &a.k, &a.v, &a.o, &a.q_b, &a.k_b, &a.v_b, &a.o_b});
      add({&m.gate, &m.up, &m.down, &m.gate_b, &m.up_b, &m.down_b, &m.gate_up, &m.out});
      add({&s.in_proj, &s.in_proj_b, &s.conv_w, &s.conv_b, &s.dt_bias, &s.A_log, &s.D, &s.norm, &s.out_proj,
           &s.out_proj_b});
    }
    return ps;
  }

  // Validates opts.state against this model and the call, and describes the rows it extends.
  StateRows state_rows(const ForwardOptions& opts, int64_t B, int64_t L) const {
    StateRows sr;
    sr.weights = opts.decode_weights;
    DecodeState* st = opts.state;
    if (!st) return sr;
    PRISM_CHECK(st->keys().size() == static_cast<size_t>(num_attention_blocks) &&
                    st->ssm_states().size() == static_cast<size_t>(num_mamba_blocks),
                "forward: the DecodeState was built for another architecture (", st->keys().size(),
                " attention and ", st->ssm_states().size(), " Mamba2 blocks; this model has ", num_attention_blocks,
                " and ", num_mamba_blocks, ")");
    for (const auto* v : {&st->keys(), &st->conv_states()})
      for (const auto& t : *v)
        PRISM_CHECK(t.scalar_type() == dtype && t.device() == device, "forward: the DecodeState holds ",
                    t.scalar_type(), " on ", t.device(), ", the model computes in ", dtype, " on ", device);
    PRISM_CHECK(L >= 1, "forward: a DecodeState needs at least one input token per row");
    PRISM_CHECK(opts.state_row >= 0 && opts.state_row + B <= st->rows(), "forward: rows [", opts.state_row, ", ",
                opts.state_row + B, ") do not fit in the DecodeState's ", st->rows(), " rows");
    sr.state = st;
    sr.row0 = opts.state_row;
    const auto& lens = st->lengths();
    int64_t lo = lens[sr.row0], hi = lo;
    for (int64_t r = sr.row0; r < sr.row0 + B; ++r) {
      lo = std::min(lo, lens[r]);
      hi = std::max(hi, lens[r]);
      PRISM_CHECK(lens[r] + L <= st->max_length(), "forward: DecodeState row ", r, " holds ", lens[r], " tokens; ",
                  L, " more exceed its max_length ", st->max_length());
    }
    sr.uniform = lo == hi;
    PRISM_CHECK(sr.uniform || L == 1, "forward: rows of different lengths (", lo, " to ", hi,
                ") can only be extended one token at a time, got ", L, " tokens");
    sr.past = lo;
    sr.any_past = hi > 0;
    sr.key_len = hi + L;
    if (!sr.uniform) {
      std::vector<int64_t> pos(lens.begin() + sr.row0, lens.begin() + sr.row0 + B);
      sr.write_index = at::tensor(pos, at::kLong).to(device).view({B, 1, 1, 1});
    }
    return sr;
  }

  ForwardOutput forward(const at::Tensor& input_ids, const ForwardOptions& opts) const {
    PRISM_CHECK(input_ids.dim() == 2, "forward: input_ids must be [B, L], got ", input_ids.sizes());
    PRISM_CHECK(!(opts.activation_checkpointing && opts.state),
                "forward: activation_checkpointing cannot be combined with a DecodeState (the state would be "
                "appended to again when a layer is recomputed in backward)");
    PRISM_CHECK(device.type() != at::kMeta, "forward: the model is on the meta device (no weights)");
    PRISM_CHECK(!opts.decode_weights || !at::GradMode::is_enabled(),
                "forward: decode_weights are copies of the parameters (no gradient reaches them); use them with "
                "grad mode off");
    const int64_t B = input_ids.size(0), L = input_ids.size(1);
    auto ids = input_ids.to(device, at::kLong);
    const StateRows sr = state_rows(opts, B, L);
    const int64_t past = sr.past;

    ops::AttentionParams ap;
    ap.scale = attn_scale();
    ap.causal = true;
    ap.window = cfg.sliding_window;
    ap.q_offset = past;
    ap.impl = opts.impl;

    at::Tensor positions;
    if (opts.cu_seqlens.defined()) {
      PRISM_CHECK(B == 1, "forward: packed documents (cu_seqlens) need batch size 1, got ", B);
      PRISM_CHECK(!sr.state, "forward: packed documents (cu_seqlens) cannot be combined with a DecodeState");
      auto cu = opts.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
      PRISM_CHECK(cu.dim() == 1 && cu.size(0) >= 2 && cu[0].item<int64_t>() == 0 && cu[-1].item<int64_t>() == L,
                  "forward: cu_seqlens must be [0, ..., L=", L, "], got ", cu);
      ap.cu_seqlens = cu.to(device);
      if (!opts.position_ids.defined()) {
        auto pos = at::empty({L}, at::kLong);
        auto* c = cu.data_ptr<int64_t>();
        auto* p = pos.data_ptr<int64_t>();
        for (int64_t dct = 0; dct + 1 < cu.size(0); ++dct) {
          PRISM_CHECK(c[dct + 1] >= c[dct], "forward: cu_seqlens must be non-decreasing, got ", cu);
          for (int64_t t = c[dct]; t < c[dct + 1]; ++t) p[t] = t - c[dct];
        }
        positions = pos.unsqueeze(0).to(device);
      }
    }
    if (opts.position_ids.defined()) {
      PRISM_CHECK(opts.position_ids.sizes() == input_ids.sizes(), "forward: position_ids must be [B, L] like input_ids, got ",
                  opts.position_ids.sizes());
      positions = opts.position_ids.to(device, at::kLong);
    }
    if (!positions.defined()) {
      if (sr.uniform) {
        positions = at::arange(past, past + L, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0).expand({B, L});
      } else {
        positions = sr.write_index.view({B, 1});  // L == 1: each row's next position is its length
      }
    }
    if (!sr.uniform) {
      // Ragged rows (L == 1): the query of row b sits at position lens[b] and sees exactly keys
      // [0, lens[b]] (within the sliding window), which one per-row key mask expresses.
      auto kpos = at::arange(sr.key_len, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0);
      auto qpos = sr.write_index.view({B, 1});
      auto visible = kpos <= qpos;
      if (cfg.sliding_window > 0) visible = visible & ((qpos - kpos) < cfg.sliding_window);
      ap.key_mask = visible;
      ap.causal = false;
      ap.window = 0;
      ap.q_offset = sr.key_len - 1;
    }

    at::Tensor token_mask;  // [B, L] for the Mamba2 padding rule
    if (opts.attention_mask.defined()) {
      PRISM_CHECK(opts.attention_mask.sizes() == input_ids.sizes(), "forward: attention_mask must be [B, L] like input_ids, got ",
                  opts.attention_mask.sizes());
      PRISM_CHECK(!sr.state, "forward: attention_mask (padding) cannot be combined with a DecodeState: rows of a "
                             "decode state hold their own lengths, nothing is padded");
      auto m = opts.attention_mask.to(device, at::kLong);
      token_mask = m;
      ap.key_mask = m;
    }

    at::Tensor cos, sin;
    if (cfg.use_rope) std::tie(cos, sin) = ops::rope_cos_sin(inv_freq, positions, dtype);

    ForwardOutput out;
    auto h = at::embedding(embed, ids);
    if (cfg.embedding_multiplier != 1.0) h = h * cfg.embedding_multiplier;
    if (opts.output_hidden_states) out.hidden_states.push_back(h);
    const LayerContext lc{cos, sin, ap, token_mask, sr, opts.impl};
    const bool ckpt = opts.activation_checkpointing && at::GradMode::is_enabled();
    for (size_t i = 0; i < layers.size(); ++i) {
      if (hooks) hooks->before_layer(i);
      if (ckpt) {
        // The closure outlives this call (it runs again in backward): context by value, no cache.
        h = checkpointed([this, i, lc](const at::Tensor& x) { return layer_forward(i, x, lc); }, h, layer_params(i));
      } else {
        h = layer_forward(i, h, lc);
      }
      if (hooks) h = hooks->after_layer(i, h);
      if (opts.output_hidden_states && i + 1 < layers.size()) out.hidden_states.push_back(h);
    }
    if (opts.last_logits_only) h = h.narrow(1, L - 1, 1);
    h = ops::rms_norm(h, final_norm, cfg.norm_eps, opts.impl);
    if (opts.output_hidden_states) out.hidden_states.push_back(h);
    if (opts.skip_lm_head) {
      out.last_hidden = h;  // the caller applies lm_head_weight() / logits_scaling (fused linear + CE)
    } else {
      out.logits = linear(h, lm_head, {}, opts.decode_weights);
      if (cfg.logits_scaling != 1.0) out.logits = out.logits / cfg.logits_scaling;
    }
    if (sr.state) sr.state->advance(sr.row0, B, L);
    return out;
  }
};

CausalLM::CausalLM(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CausalLM::~CausalLM() = default;

const ModelConfig& CausalLM::config() const { return impl_->cfg; }
const std::vector<std::pair<std::string, at::Tensor>>& CausalLM::named_parameters() const { return impl_->params; }
const std::vector<ParameterKind>& CausalLM::parameter_kinds() const { return impl_->param_kinds; }
void CausalLM::set_layer_hooks(std::shared_ptr<LayerHooks> hooks) { impl_->hooks = std::move(hooks); }
std::shared_ptr<void> CausalLM::gather_parameters() const { return impl_->hooks ? impl_->hooks->gather_all() : nullptr; }
bool CausalLM::has_layer_hooks() const { return impl_->hooks != nullptr; }

std::vector<at::Tensor> CausalLM::gather_to_host(bool keep) const {
  const auto& ps = impl_->params;
  std::vector<at::Tensor> out;
  if (keep) out.reserve(ps.size());
  if (!impl_->hooks) {
    if (keep)
      for (const auto& [n, t] : ps) out.push_back(t.detach());
    return out;
  }
  std::unordered_map<std::string, int64_t> layer_of;
  for (const auto& s : impl_->slots) layer_of[s.name] = s.layer;
  if (keep)
    for (const auto& [n, t] : ps) out.push_back(t.detach());  // root unit and frozen tensors: resident
  at::NoGradGuard no_grad;
  for (size_t l = 0; l < impl_->cfg.layers.size(); ++l) {
    impl_->hooks->before_layer(l);  // gathers layer l (and prefetches l + 1) on every rank of the group
    if (keep)
      for (size_t k = 0; k < ps.size(); ++k)
        if (layer_of[ps[k].first] == static_cast<int64_t>(l))
          out[k] = ps[k].second.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
    impl_->hooks->after_layer(l, at::Tensor());  // frees it again (no autograd: no output)
  }
  return out;
}

const char* parameter_kind_name(ParameterKind k) {
  switch (k) {
    case ParameterKind::kEmbedding: return "embedding";
    case ParameterKind::kLmHead: return "lm_head";
    case ParameterKind::kNorm: return "norm";
    case ParameterKind::kBias: return "bias";
    case ParameterKind::kSsm: return "ssm";
    case ParameterKind::kMatrix: return "matrix";
  }
  return "matrix";
}
c10::ScalarType CausalLM::dtype() const { return impl_->dtype; }
at::Device CausalLM::device() const { return impl_->device; }
const at::Tensor& CausalLM::lm_head_weight() const { return impl_->lm_head; }

int64_t CausalLM::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : impl_->params) n += t.numel();
  return n;
}

std::vector<std::pair<std::string, int64_t>> CausalLM::parameter_counts_by_kind() const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& s : impl_->slots) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& p) { return p.first == s.kind; });
    if (it == out.end()) out.emplace_back(s.kind, 0), it = out.end() - 1;
    it->second += s.slot->numel();
  }
  return out;
}

std::vector<ParameterInfo> CausalLM::parameter_infos() const {
  std::vector<ParameterInfo> out;
  out.reserve(impl_->slots.size());
  for (const auto& s : impl_->slots) out.push_back({s.name, s.shape, s.kind, s.role, s.layer});
  return out;
}

ModelConfig CausalLM::read_config(const std::string& dir) {
  const std::string p = fs::is_regular_file(dir) ? dir : fs::join(dir, "config.json");
  if (!fs::is_regular_file(p)) throw Error("cannot open config.json (is this a Hugging Face checkpoint directory?)", {p});
  const std::string text = fs::read_file(p);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(sanitize_python_json(text));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid JSON: ") + e.what(), {p});
  }
  if (!j.is_object()) throw Error("config.json must be a JSON object", {p});
  JsonReader r(j, p);
  const std::string type = r.string("model_type", "");
  if (type.empty()) throw Error("missing required key", {p, "model_type"});
  ModelConfig m = find_family(type, p).parse(r);
  if (r.has("architectures") && j.at("architectures").is_array() && !j.at("architectures").empty() &&
      j.at("architectures")[0].is_string())
    m.architecture = j.at("architectures")[0].get<std::string>();
  m.config_json = text;
  // generation_config.json (next to config.json) overrides config.json's eos, as in transformers.
  auto eos_of = [](const nlohmann::json& o, const std::string& file) {
    std::vector<int64_t> ids;
    if (!o.is_object() || !o.contains("eos_token_id") || o["eos_token_id"].is_null()) return ids;
    const auto& e = o["eos_token_id"];
    for (const auto& v : e.is_array() ? e : nlohmann::json::array({e})) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        throw Error("eos_token_id must be a non-negative integer or a list of them", {file, "eos_token_id"});
      ids.push_back(v.get<int64_t>());
    }
    return ids;
  };
  m.eos_token_ids = eos_of(j, p);
  const std::string gp = fs::join(fs::parent(p), "generation_config.json");
  if (fs::is_regular_file(gp)) {
    nlohmann::json g;
    try {
      g = nlohmann::json::parse(sanitize_python_json(fs::read_file(gp)));
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("invalid JSON: ") + e.what(), {gp});
    }
    if (g.is_object() && g.contains("eos_token_id")) m.eos_token_ids = eos_of(g, gp);
  }
  return m;
}

double CausalLM::parameter_count(const ModelConfig& cfg) {
  ModelConfig base = cfg;
  base.layers.clear();
  auto numel = [](const ModelConfig& c) {
    Impl impl;
    impl.cfg = c;
    impl.build_slots();
    double n = 0;
    for (const auto& s : impl.slots) {
      double p = 1;
      for (int64_t d : s.shape) p *= static_cast<double>(d);
      n += p;
    }
    return n;
  };
  const double outside_layers = numel(base);
  // Layers differ only by their block kinds: count one layer of each kind, times its multiplicity.
  std::map<std::vector<BlockKind>, std::pair<const LayerSpec*, int64_t>> kinds;
  for (const auto& layer : cfg.layers) {
    std::vector<BlockKind> key;
    for (const auto& b : layer.blocks) key.push_back(b.kind);
    auto [it, fresh] = kinds.try_emplace(key, &layer, 0);
    ++it->second.second;
  }
  double total = outside_layers;
  for (const auto& [key, spec_count] : kinds) {
    ModelConfig one = base;
    one.layers = {*spec_count.first};
    total += (numel(one) - outside_layers) * static_cast<double>(spec_count.second);
  }
  return total;
}

std::unique_ptr<CausalLM> CausalLM::from_config(const ModelConfig& cfg, const LoadOptions& opts) {
  check_fits(cfg, opts.dtype, at::Device(opts.device));
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  impl->dtype = opts.dtype;
  impl->device = at::Device(opts.device);
  impl->build_slots();
  for (auto& s : impl->slots)
    *s.slot = at::empty(s.shape, at::TensorOptions().dtype(opts.dtype).device(impl->device));
  impl->finish();
  return std::unique_ptr<CausalLM>(new CausalLM(std::move(impl)));
}

std::unique_ptr<CausalLM> CausalLM::from_architecture(const std::string& dir, const LoadOptions& opts) {
  auto model = from_config(read_config(dir), opts);
  // Only a directory is a source: a bare config.json path says nothing about which files around
  // it belong to the checkpoint.
  if (fs::is_directory(dir)) model->impl_->source_dir = dir;
  return model;
}

std::unique_ptr<CausalLM> CausalLM::from_pretrained(const std::string& dir, const LoadOptions& opts) {
  auto impl = std::make_unique<Impl>();
  impl->cfg = read_config(dir);
  check_fits(impl->cfg, opts.dtype, at::Device(opts.device), 1.0,
             fs::is_regular_file(dir) ? dir : fs::join(dir, "config.json"));
  impl->dtype = opts.dtype;
  impl->device = at::Device(opts.device);
  impl->source_dir = dir;
  impl->build_slots();
  io::CheckpointReader reader(dir);
  std::set<std::string> expected;
  std::vector<std::string> missing;
  // A family may accept other spellings of a prefix (Nemotron-H: hub "backbone." vs "model.").
  auto stored_name = [&](const std::string& name) -> std::string {
    if (reader.contains(name)) return name;
    for (const auto& [from, to] : impl->cfg.name_aliases) {
      if (name.rfind(from, 0) == 0) {
        std::string alt = to + name.substr(from.size());
        if (reader.contains(alt)) return alt;
      }
    }
    return {};
  };
  for (auto& s : impl->slots) {
    const std::string n = stored_name(s.name);
    if (n.empty()) {
      missing.push_back(s.name);
      continue;
    }
    expected.insert(n);
    auto t = reader.get(n);
    if (t.sizes() != at::IntArrayRef(s.shape))
      throw Error("shape does not match config.json", {reader.file_of(n), "", n, shape_str(s.shape), shape_str(t.sizes())});
    if (!at::isFloatingType(t.scalar_type()))
      throw Error("expected a floating-point tensor", {reader.file_of(n), "", n, "BF16/F16/F32", reader.info(n).dtype});
    *s.slot = t.to(impl->device, opts.dtype);
  }
  std::vector<std::string> unexpected;
  for (const auto& n : reader.names()) {
    if (expected.count(n)) continue;
    // Tied checkpoints may still carry lm_head; rotary buffers are recomputed.
    if (impl->cfg.tie_word_embeddings && n == impl->cfg.lm_head_name) continue;
    if (n.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (n.rfind("mtp.", 0) == 0) continue;  // multi-token-prediction heads (Nemotron-H) are not used
    unexpected.push_back(n);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string msg = "checkpoint tensors do not match the architecture in config.json";
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 20; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > 20) s += ", ... (" + std::to_string(v.size()) + " in all)";
      return s;
    };
    if (!missing.empty()) msg += "; missing: " + list(missing);
    if (!unexpected.empty()) msg += "; unexpected: " + list(unexpected);
    throw Error(msg, {dir});
  }
  impl->finish();
  return std::unique_ptr<CausalLM>(new CausalLM(std::move(impl)));
}

void CausalLM::init_weights(uint64_t seed, double initializer_range) {
  const double std = initializer_range < 0 ? impl_->cfg.initializer_range : initializer_range;
  PRISM_CHECK(std >= 0.0 && std::isfinite(std), "init_weights: initializer_range must be a finite value >= 0, got ",
              std);
  PRISM_CHECK(impl_->device.type() != at::kMeta, "init_weights: the model is on the meta device (no storage)");
  // In place, so tensors already handed out (optimizer state, named_parameters()) stay the parameters.
  at::NoGradGuard no_grad;
  for (const auto& s : impl_->slots)
    s.slot->copy_(initial_values(s.init, s.name, s.shape, impl_->cfg, seed, std));
}

ForwardOutput CausalLM::forward(const at::Tensor& input_ids, const ForwardOptions& opts) const {
  return impl_->forward(input_ids, opts);
}

void CausalLM::save_pretrained(const std::string& dir, uint64_t max_shard_bytes) const {
  save_pretrained(dir, {}, max_shard_bytes);
}

void CausalLM::save_pretrained(const std::string& dir, const std::vector<at::Tensor>& values,
                               uint64_t max_shard_bytes) const {
  const auto& cfg = impl_->cfg;
  PRISM_CHECK(values.empty() || values.size() == impl_->params.size(), "save_pretrained: ", values.size(),
              " tensors for ", impl_->params.size(), " parameters");
  PRISM_CHECK(impl_->device.type() != at::kMeta, "save_pretrained: the model is on the meta device (no weights)");
  PRISM_CHECK(!cfg.config_json.empty(), "save_pretrained: the model has no config.json text to save");
  const std::string target = fs::absolute(dir);
  const std::string tmp = target + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    auto j = nlohmann::json::parse(sanitize_python_json(cfg.config_json));
    // transformers v5 writes "dtype", v4 "torch_dtype": update whichever is present.
    const std::string dn = runtime::hf_dtype_name(impl_->dtype);
    if (j.contains("dtype")) j["dtype"] = dn;
    if (j.contains("torch_dtype") || !j.contains("dtype")) j["torch_dtype"] = dn;
    fs::write_file_atomic(fs::join(tmp, "config.json"), j.dump(2) + "\n");
    // Tokenizer and generation files travel with the weights (an exported checkpoint is usable as is).
    if (!impl_->source_dir.empty() && fs::is_directory(impl_->source_dir))
      copy_checkpoint_files(impl_->source_dir, tmp);  // config.json is already written: not replaced
    io::NamedTensors tensors;
    for (size_t k = 0; k < impl_->params.size(); ++k)
      tensors.emplace_back(impl_->params[k].first, values.empty() ? impl_->params[k].second.detach() : values[k]);
    io::ShardOptions so;
    so.max_shard_bytes = max_shard_bytes;
    io::save_sharded(tmp, tensors, so);
  } catch (...) {
    fs::remove_all(tmp);
    throw;
  }
  // Swap in the finished directory; an existing one is moved aside first and removed last, so
  // at every moment either the old or the new complete checkpoint exists.
  std::string old;
  if (fs::exists(target)) {
    old = target + ".old." + std::to_string(::getpid());
    fs::rename(target, old);
  }
  fs::rename(tmp, target);
  fs::fsync_dir(fs::parent(target));
  if (!old.empty()) fs::remove_all(old);
}

}  // namespace prism::models
