// Attention kernels benchmark (GPU): prism's fused kernels vs at::scaled_dot_product_attention
// with each CUDA backend forced in turn (flash, cuDNN, memory-efficient) in the same process.
//
// FLOP convention (FlashAttention's benchmark_flash_attention.py, performance-anchors.md §1.1):
//   forward      = 4 * B * H * Lq * Lk * d, halved when causal (Lq == Lk);
//   backward     = 2.5 x forward;  forward + backward = 3.5 x forward;
//   packed (varlen) = the sum of the per-document counts.
// Shapes follow the FlashAttention papers: B * seq = --tokens (16k), H * d = --hidden (2048),
// bf16, q/k/v laid out as the model has them ([B, L, H, d] memory seen as [B, H, L, d]).
// Decode rows report time and the KV-cache bandwidth (bytes of K and V read / time).
//
//   bench_attention [--json FILE] [--md FILE] [--iters N] [--seqs 1024,2048,...] [--hdims 64,128]
//                   [--tokens 16384] [--hidden 2048] [--quick]
//
// Timing: warm-up, then N iterations between device synchronisations (wall clock). Forward+backward
// uses torch::autograd::grad (no gradient accumulation), identically for every implementation.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <torch/cuda.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "prism/ops/attention.h"

namespace {

struct Options {
  std::string json_path, md_path;
  int iters = 20;
  std::vector<int64_t> seqs{1024, 2048, 4096, 8192, 16384};
  std::vector<int64_t> hdims{64, 128};
  int64_t tokens = 16384, hidden = 2048;
};

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoll(item));
  return v;
}

struct Result {
  std::string section, impl, mode;  // section: dense | varlen | decode
  int64_t B = 0, H = 0, Hkv = 0, Lq = 0, Lk = 0, d = 0;
  bool causal = false;
  double ms = 0, tflops = 0, gbps = 0;
  std::string error;
};

double time_ms(const std::function<void()>& fn, int iters) {
  for (int i = 0; i < 3; ++i) fn();
  torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Forces one SDPA backend (the others off); restored by the caller via `all_backends`.
void only_backend(const std::string& name) {
  auto& ctx = at::globalContext();
  ctx.setSDPUseFlash(name == "sdpa_flash");
  ctx.setSDPUseCuDNN(name == "sdpa_cudnn");
  ctx.setSDPUseMemEfficient(name == "sdpa_efficient");
  ctx.setSDPUseMath(false);
}
void all_backends() {
  auto& ctx = at::globalContext();
  ctx.setSDPUseFlash(true);
  ctx.setSDPUseCuDNN(true);
  ctx.setSDPUseMemEfficient(true);
  ctx.setSDPUseMath(true);
}

const std::vector<std::string> kSdpa{"sdpa_flash", "sdpa_cudnn", "sdpa_efficient"};

// [B, L, H, d] memory as [B, H, L, d].
at::Tensor bhld(int64_t B, int64_t H, int64_t L, int64_t d, bool grad) {
  auto t = at::randn({B, L, H, d}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA)).transpose(1, 2);
  return grad ? t.detach().requires_grad_() : t;
}

// Times `fwd` (mode "fwd", no autograd) or forward + backward to `inputs` (mode "fwd_bwd").
void measure(Result r, const std::function<at::Tensor()>& fwd, const std::vector<at::Tensor>& inputs, double flops,
             int iters, std::vector<Result>& out) {
  try {
    if (r.mode == "fwd") {
      at::NoGradGuard ng;
      r.ms = time_ms([&] { fwd(); }, iters);
      r.tflops = flops / (r.ms * 1e-3) / 1e12;
    } else {
      at::Tensor dout;
      r.ms = time_ms(
          [&] {
            auto o = fwd();
            if (!dout.defined()) dout = at::randn_like(o);
            torch::autograd::grad({o}, inputs, {dout});
          },
          iters);
      r.tflops = 3.5 * flops / (r.ms * 1e-3) / 1e12;
    }
  } catch (const std::exception& e) {
    r.error = e.what();
    const auto nl = r.error.find('\n');
    if (nl != std::string::npos) r.error.resize(nl);
  }
  out.push_back(r);
}

void bench_dense(const Options& o, std::vector<Result>& out) {
  for (int64_t d : o.hdims)
    for (int64_t L : o.seqs)
      for (bool causal : {false, true})
        for (const char* mode : {"fwd", "fwd_bwd"}) {
          const int64_t B = std::max<int64_t>(1, o.tokens / L), H = o.hidden / d;
          const bool grad = std::string(mode) == "fwd_bwd";
          at::manual_seed(0);
          auto q = bhld(B, H, L, d, grad), k = bhld(B, H, L, d, grad), v = bhld(B, H, L, d, grad);
          const double scale = 1.0 / std::sqrt(static_cast<double>(d));
          const double flops = 4.0 * B * H * L * L * d * (causal ? 0.5 : 1.0);
          Result base;
          base.section = "dense";
          base.mode = mode;
          base.B = B, base.H = H, base.Hkv = H, base.Lq = L, base.Lk = L, base.d = d, base.causal = causal;
          prism::ops::AttentionParams p;
          p.scale = scale;
          p.causal = causal;
          auto prism_fn = [&] {
            if (!grad) return prism::ops::attention_fused_forward(q, k, v, p).out;
            return prism::ops::attention_fused(q, k, v, p);
          };
          Result r = base;
          r.impl = "prism";
          measure(r, prism_fn, {q, k, v}, flops, o.iters, out);
          for (const auto& b : kSdpa) {
            only_backend(b);
            r = base;
            r.impl = b;
            measure(r, [&] { return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal, scale); }, {q, k, v}, flops,
                    o.iters, out);
            all_backends();
          }
          std::fprintf(stderr, "[bench_attention] dense d=%lld L=%lld causal=%d %s done\n", static_cast<long long>(d),
                       static_cast<long long>(L), causal, mode);
        }
}

// Packed documents (B = 1, causal): prism with cu_seqlens vs torch's flash varlen
// (at::_flash_attention_forward with cumulative sequence lengths; autograd for fwd+bwd).
void bench_varlen(const Options& o, std::vector<Result>& out) {
  for (int64_t d : o.hdims)
    for (const char* mode : {"fwd", "fwd_bwd"}) {
      const int64_t H = o.hidden / d, total = o.tokens;
      const bool grad = std::string(mode) == "fwd_bwd";
      // Deterministic document lengths in [256, 4096] summing to `total`.
      std::vector<int64_t> cu{0};
      uint64_t s = 12345;
      while (cu.back() < total) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        const int64_t len = 256 + static_cast<int64_t>((s >> 33) % 3841);
        cu.push_back(std::min(total, cu.back() + len));
      }
      double flops = 0;
      int64_t max_len = 0;
      for (size_t i = 0; i + 1 < cu.size(); ++i) {
        const double n = static_cast<double>(cu[i + 1] - cu[i]);
        flops += 4.0 * H * n * n * d * 0.5;
        max_len = std::max<int64_t>(max_len, cu[i + 1] - cu[i]);
      }
      at::manual_seed(0);
      auto opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
      auto q3 = at::randn({total, H, d}, opts), k3 = at::randn({total, H, d}, opts), v3 = at::randn({total, H, d}, opts);
      if (grad) {
        q3.requires_grad_();
        k3.requires_grad_();
        v3.requires_grad_();
      }
      auto cu64 = at::tensor(cu, at::kLong).to(at::kCUDA);
      auto cu32 = cu64.to(at::kInt);
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      prism::ops::AttentionParams p;
      p.scale = scale;
      p.causal = true;
      p.cu_seqlens = cu64;
      Result base;
      base.section = "varlen";
      base.mode = mode;
      base.B = static_cast<int64_t>(cu.size()) - 1, base.H = H, base.Hkv = H, base.Lq = total, base.Lk = max_len;
      base.d = d, base.causal = true;
      Result r = base;
      r.impl = "prism";
      measure(
          r,
          [&] {
            auto q = q3.unsqueeze(0).transpose(1, 2), k = k3.unsqueeze(0).transpose(1, 2), v = v3.unsqueeze(0).transpose(1, 2);
            return grad ? prism::ops::attention_fused(q, k, v, p) : prism::ops::attention_fused_forward(q, k, v, p).out;
          },
          {q3, k3, v3}, flops, o.iters, out);
      r = base;
      r.impl = "torch_flash_varlen";
      measure(
          r,
          [&] {
            return std::get<0>(at::_flash_attention_forward(q3, k3, v3, cu32, cu32, max_len, max_len, 0.0, true, false, scale));
          },
          {q3, k3, v3}, flops, o.iters, out);
      std::fprintf(stderr, "[bench_attention] varlen d=%lld %s done (%zu docs)\n", static_cast<long long>(d), mode,
                   cu.size() - 1);
    }
}

// Decode: one query token per sequence against a KV cache (GQA 32/8, d = 128).
void bench_decode(const Options& o, std::vector<Result>& out) {
  const int64_t B = 8, Hq = 32, Hkv = 8, d = 128;
  for (int64_t Lk : {1024, 4096, 16384}) {
    at::manual_seed(0);
    auto q = bhld(B, Hq, 1, d, false), k = bhld(B, Hkv, Lk, d, false), v = bhld(B, Hkv, Lk, d, false);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const double bytes = 2.0 * B * Hkv * Lk * d * 2;
    prism::ops::AttentionParams p;
    p.scale = scale;
    p.q_offset = Lk - 1;
    Result base;
    base.section = "decode";
    base.mode = "fwd";
    base.B = B, base.H = Hq, base.Hkv = Hkv, base.Lq = 1, base.Lk = Lk, base.d = d, base.causal = true;
    const double flops = 4.0 * B * Hq * Lk * d;
    auto add_bw = [&](std::vector<Result>& rs) {
      if (rs.back().error.empty()) rs.back().gbps = bytes / (rs.back().ms * 1e-3) / 1e9;
    };
    Result r = base;
    r.impl = "prism";
    measure(r, [&] { return prism::ops::attention_fused_decode(q, k, v, p); }, {}, flops, o.iters, out);
    add_bw(out);
    for (const auto& b : kSdpa) {
      only_backend(b);
      r = base;
      r.impl = b;
      // Lq == 1: no mask needed (the one query sees every key).
      measure(r, [&] { return at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, scale, /*enable_gqa=*/true); }, {},
              flops, o.iters, out);
      add_bw(out);
      all_backends();
    }
    std::fprintf(stderr, "[bench_attention] decode Lk=%lld done\n", static_cast<long long>(Lk));
  }
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) o += c;
  }
  return o;
}

void write_json(const std::string& path, const std::vector<Result>& rs) {
  FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  std::fprintf(f, "{\"flop_convention\": \"fwd = 4*B*H*Lq*Lk*d (halved when causal), bwd = 2.5*fwd, fwd_bwd = 3.5*fwd\", "
                  "\"dtype\": \"bf16\", \"results\": [\n");
  for (size_t i = 0; i < rs.size(); ++i) {
    const auto& r = rs[i];
    std::fprintf(f,
                 "  {\"section\": \"%s\", \"impl\": \"%s\", \"mode\": \"%s\", \"B\": %lld, \"H\": %lld, \"Hkv\": %lld, "
                 "\"Lq\": %lld, \"Lk\": %lld, \"d\": %lld, \"causal\": %s, \"ms\": %.5f, \"tflops\": %.2f, \"gbps\": %.1f, "
                 "\"error\": \"%s\"}%s\n",
                 r.section.c_str(), r.impl.c_str(), r.mode.c_str(), (long long)r.B, (long long)r.H, (long long)r.Hkv,
                 (long long)r.Lq, (long long)r.Lk, (long long)r.d, r.causal ? "true" : "false", r.ms, r.tflops, r.gbps,
                 json_escape(r.error).c_str(), i + 1 < rs.size() ? "," : "");
  }
  std::fprintf(f, "]}\n");
  if (f != stdout) std::fclose(f);
}

// One row per (section, shape, mode): prism's TFLOP/s, each SDPA backend's, and prism / best.
void write_md(FILE* f, const std::vector<Result>& rs) {
  std::fprintf(f, "FLOPs: fwd = 4·B·H·Lq·Lk·d (halved when causal), fwd+bwd = 3.5 × fwd; bf16; TFLOP/s "
                  "(decode: µs and KV GB/s).\n\n");
  std::fprintf(f, "| section | d | seq | causal | mode | prism | sdpa_flash | sdpa_cudnn | sdpa_efficient | torch_flash_varlen "
                  "| prism / best |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::map<std::string, std::map<std::string, const Result*>> rows;
  std::vector<std::string> order;
  for (const auto& r : rs) {
    const std::string key = r.section + "|" + std::to_string(r.d) + "|" + std::to_string(r.Lk) + "|" +
                            (r.causal ? "yes" : "no") + "|" + r.mode;
    if (!rows.count(key)) order.push_back(key);
    rows[key][r.impl] = &r;
  }
  for (const auto& key : order) {
    auto& m = rows[key];
    const Result* any = m.begin()->second;
    const bool decode = any->section == "decode";
    auto cell = [&](const std::string& impl) -> std::string {
      auto it = m.find(impl);
      if (it == m.end()) return "";
      if (!it->second->error.empty()) return "n/a";
      char buf[64];
      if (decode) std::snprintf(buf, sizeof buf, "%.1f µs / %.0f GB/s", it->second->ms * 1e3, it->second->gbps);
      else std::snprintf(buf, sizeof buf, "%.1f", it->second->tflops);
      return buf;
    };
    double best = 0;
    for (const auto& [impl, r] : m)
      if (impl != "prism" && r->error.empty()) best = std::max(best, decode ? 1.0 / r->ms : r->tflops);
    std::string ratio = "";
    auto pit = m.find("prism");
    if (pit != m.end() && pit->second->error.empty() && best > 0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fx", (decode ? 1.0 / pit->second->ms : pit->second->tflops) / best);
      ratio = buf;
    }
    std::fprintf(f, "| %s | %lld | %lld | %s | %s | %s | %s | %s | %s | %s | %s |\n", any->section.c_str(), (long long)any->d,
                 (long long)(any->section == "varlen" ? any->Lq : any->Lk), any->causal ? "yes" : "no", any->mode.c_str(),
                 cell("prism").c_str(), cell("sdpa_flash").c_str(), cell("sdpa_cudnn").c_str(),
                 cell("sdpa_efficient").c_str(), cell("torch_flash_varlen").c_str(), ratio.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_attention: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--json") o.json_path = next();
    else if (a == "--md") o.md_path = next();
    else if (a == "--iters") o.iters = std::atoi(next().c_str());
    else if (a == "--seqs") o.seqs = parse_list(next());
    else if (a == "--hdims") o.hdims = parse_list(next());
    else if (a == "--tokens") o.tokens = std::stoll(next());
    else if (a == "--hidden") o.hidden = std::stoll(next());
    else if (a == "--quick") {
      o.seqs = {1024, 4096};
      o.iters = 5;
    } else {
      std::fprintf(stderr,
                   "usage: bench_attention [--json FILE] [--md FILE] [--iters N] [--seqs 1024,2048,...] [--hdims 64,128] "
                   "[--tokens 16384] [--hidden 2048] [--quick]\n");
      return 2;
    }
  }
  try {
    if (!torch::cuda::is_available()) {
      std::fprintf(stderr, "bench_attention: no CUDA device, nothing to measure\n");
      return 0;
    }
    {
      auto probe = at::zeros({1, 1, 1, 64}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
      if (!prism::ops::attention_fused_supported(probe, probe, probe, {})) {
        std::fprintf(stderr, "bench_attention: prism was built without the CUDA attention kernels\n");
        return 1;
      }
    }
    std::vector<Result> rs;
    bench_dense(o, rs);
    bench_varlen(o, rs);
    bench_decode(o, rs);
    if (!o.json_path.empty()) write_json(o.json_path, rs);
    write_md(stdout, rs);
    if (!o.md_path.empty()) {
      FILE* f = std::fopen(o.md_path.c_str(), "w");
      if (!f) throw std::runtime_error("cannot write " + o.md_path);
      write_md(f, rs);
      std::fclose(f);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: error: %s\n", e.what());
    return 1;
  }
}
