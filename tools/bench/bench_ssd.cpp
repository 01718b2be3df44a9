// GPU benchmark of the Mamba2 kernels (kernels/causal_conv1d, kernels/gated_rmsnorm, kernels/ssd)
// against the ATen reference path, for a Nemotron-H-8B-shaped mixer layer (H = 128 heads of P = 64,
// G = 8 groups, N = 128, conv_dim = 10240, K = 4, Q = 128, bf16 activations) at seq 2k..16k, B = 1.
// Prints one JSON line per (op, direction, seq, impl): time (ms), effective bandwidth (GB/s) from
// the bytes the op must move once, and for the SSD scan TFLOP/s (full Q^2 blocks counted, as
// mamba_ssm's benchmarks do). The conv's bandwidth is also reported as a fraction of a device
// copy (x.clone()) of the same tensor, the "as fast as a memcpy" anchor.
//
//   build-*/bin/bench_ssd [iters=20] [max_seq=16384]
//
// Comparing with other implementations on the same GPU (same shapes, bf16, B = 1):
// * transformers' torch path: NemotronHMamba2Mixer.torch_forward (what prism's references mirror),
//   timed around one mixer call with torch.cuda.Event.
// * mamba-ssm's Triton kernels: `pip install mamba-ssm --no-build-isolation` (from its sdist;
//   needs causal-conv1d too), then time mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined
//   (x, dt, A, B, C, chunk_size=128, D=D) forward and backward, causal_conv1d.causal_conv1d_fn
//   (x [B, C, L] channel-last, weight [C, 4], bias, activation="silu"), and
//   mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn(y, weight, None, z=z, group_size=1024,
//   norm_before_gate=False).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "prism/ops/causal_conv1d.h"
#include "prism/ops/rmsnorm.h"
#include "prism/ops/ssd_scan.h"

namespace {

using prism::ops::Impl;

void sync() { at::zeros({1}, at::TensorOptions().device(at::kCUDA)).item<float>(); }

double time_ms(const std::function<void()>& f, int iters) {
  f();  // warm-up
  sync();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) f();
  sync();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}

void report(const char* op, const char* dir, int64_t L, const char* impl, double ms, double bytes, double flops = 0,
            double copy_gbs = 0) {
  const double gbs = bytes / ms * 1e-6;
  std::printf("{\"op\": \"%s\", \"dir\": \"%s\", \"seq\": %lld, \"impl\": \"%s\", \"ms\": %.4f, \"GBps\": %.1f", op, dir,
              static_cast<long long>(L), impl, ms, gbs);
  if (flops > 0) std::printf(", \"TFLOPps\": %.2f", flops / ms * 1e-9);
  if (copy_gbs > 0) std::printf(", \"fraction_of_copy\": %.3f", gbs / copy_gbs);
  std::printf("}\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 20;
  const int64_t max_seq = argc > 2 ? std::atoll(argv[2]) : 16384;
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "bench_ssd: no CUDA device; this benchmark needs a GPU\n");
    return 0;
  }
  try {
    const int64_t H = 128, P = 64, G = 8, N = 128, K = 4, Q = 128, I = H * P, CD = I + 2 * G * N;
    auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
    auto f32 = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
    for (int64_t L = 2048; L <= max_seq; L *= 2) {
      at::manual_seed(0);
      // ---- causal conv1d (+ SiLU), channel-last like the mixer
      {
        auto x = at::randn({1, L, CD}, bf).transpose(1, 2);
        auto w = at::randn({CD, 1, K}, bf) * 0.3;
        auto b = at::randn({CD}, bf);
        auto gout = at::randn({1, L, CD}, bf).transpose(1, 2);
        const double io = 2.0 * CD * L * 2;  // read x, write out (bf16)
        const double copy_ms = time_ms([&] { (void)x.clone(at::MemoryFormat::Preserve); }, iters);
        const double copy_gbs = io / copy_ms * 1e-6;
        report("copy_x", "fwd", L, "aten", copy_ms, io);
        for (Impl impl : {Impl::kAuto, Impl::kReference}) {
          const char* nm = impl == Impl::kAuto ? "kernel" : "reference";
          prism::ops::CausalConv1dParams p;
          p.impl = impl;
          {
            at::NoGradGuard ng;
            report("causal_conv1d", "fwd", L, nm, time_ms([&] { prism::ops::causal_conv1d(x, w, b, p); }, iters), io, 0,
                   copy_gbs);
          }
          auto xg = x.detach().requires_grad_(true);
          auto wg = w.detach().requires_grad_(true);
          auto bg = b.detach().requires_grad_(true);
          const double ms = time_ms(
              [&] {
                auto r = prism::ops::causal_conv1d(xg, wg, bg, p);
                r.out.backward(gout);
              },
              iters);
          report("causal_conv1d", "fwd+bwd", L, nm, ms, io + 3.0 * CD * L * 2, 0, copy_gbs);
        }
      }
      // ---- gated RMSNorm: y fp32 (SSD output), z bf16 strided split, weight bf16 -> fp32 out
      {
        auto y = at::randn({1, L, I}, f32);
        auto z = at::randn({1, L, 2 * I + 2 * G * N + H}, bf).narrow(2, 0, I);
        auto w = at::randn({I}, bf);
        auto gout = at::randn({1, L, I}, f32);
        const double io_f = double(L) * I * (4 + 2 + 4), io_b = double(L) * I * (4 + 2 + 4 + 4 + 2);
        for (Impl impl : {Impl::kAuto, Impl::kReference}) {
          const char* nm = impl == Impl::kAuto ? "kernel" : "reference";
          {
            at::NoGradGuard ng;
            report("rms_norm_gated", "fwd", L, nm,
                   time_ms([&] { prism::ops::rms_norm_gated(y, z, w, I / G, 1e-5, impl); }, iters), io_f);
          }
          auto yg = y.detach().requires_grad_(true), zg = z.detach().requires_grad_(true);
          auto wg = w.detach().requires_grad_(true);
          report("rms_norm_gated", "fwd+bwd", L, nm,
                 time_ms([&] { prism::ops::rms_norm_gated(yg, zg, wg, I / G, 1e-5, impl).backward(gout); }, iters),
                 io_f + io_b);
        }
      }
      // ---- SSD chunked scan (forward kernels; forward + backward kernels vs the reference's autograd)
      {
        auto xbc = at::randn({1, L, CD}, bf);
        auto parts = xbc.split_with_sizes({I, G * N, G * N}, -1);
        auto x = parts[0].view({1, L, H, P}), Bm = parts[1].view({1, L, G, N}), Cm = parts[2].view({1, L, G, N});
        auto dt = at::softplus(at::randn({1, L, H}, bf) - 2);
        auto A = -at::exp(at::rand({H}, f32) * 2.7);
        auto D = at::randn({H}, bf);
        const int64_t nc = (L + Q - 1) / Q;
        const double flops = 2.0 * (double(nc) * G * Q * Q * N + double(nc) * H * (double(Q) * Q * P + 2.0 * Q * P * N));
        const double io = double(L) * (CD * 2 + H * 2 + I * 4);  // x, B, C, dt in; y (fp32) out
        for (Impl impl : {Impl::kAuto, Impl::kReference}) {
          const char* nm = impl == Impl::kAuto ? "kernel" : "reference";
          prism::ops::SsdScanParams p;
          p.chunk_size = Q;
          p.impl = impl;
          at::NoGradGuard ng;
          report("ssd_scan", "fwd", L, nm, time_ms([&] { prism::ops::ssd_scan(x, dt, A, Bm, Cm, D, p); }, iters), io,
                 flops);
        }
        // fwd+bwd: every input requires grad (the training path: the autograd Function over the
        // forward and backward kernels, or the reference's autograd).
        auto gy = at::randn({1, L, H, P}, f32);
        for (Impl impl : {Impl::kAuto, Impl::kReference}) {
          prism::ops::SsdScanParams p;
          p.chunk_size = Q;
          p.impl = impl;
          auto xg = x.detach().requires_grad_(true), dtg = dt.detach().requires_grad_(true);
          auto Ag = A.detach().requires_grad_(true), Bg = Bm.detach().requires_grad_(true);
          auto Cg = Cm.detach().requires_grad_(true), Dg = D.detach().requires_grad_(true);
          report("ssd_scan", "fwd+bwd", L, impl == Impl::kAuto ? "kernel" : "reference",
                 time_ms([&] { prism::ops::ssd_scan(xg, dtg, Ag, Bg, Cg, Dg, p).y.backward(gy); }, iters),
                 io + double(L) * (CD * 2 + H * 2 + I * 4), 3 * flops);
        }
      }
    }
    // ---- decode step (selective state update), batch 1 and 64
    for (int64_t Bsz : {1, 64}) {
      at::NoGradGuard ng;
      auto state = at::randn({Bsz, H, P, N}, f32);
      auto x = at::randn({Bsz, H, P}, bf), dt = at::rand({Bsz, H}, bf), Bm = at::randn({Bsz, G, N}, bf);
      auto Cm = at::randn({Bsz, G, N}, bf), A = -at::rand({H}, f32), D = at::randn({H}, bf);
      const double io = double(Bsz) * H * P * N * 4 * 2;  // state read + write
      for (Impl impl : {Impl::kAuto, Impl::kReference})
        report("ssd_step", Bsz == 1 ? "decode_b1" : "decode_b64", 1, impl == Impl::kAuto ? "kernel" : "reference",
               time_ms([&] { prism::ops::ssd_step(state, x, dt, A, Bm, Cm, D, impl); }, iters * 10), io);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ssd: error: %s\n", e.what());
    return 1;
  }
}
