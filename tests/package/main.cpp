// Consumer of the installed prism package: loads a checkpoint, runs a forward, checks the result
// is finite and shaped [1, L, vocab]. Exit code 0 = pass.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>

#include <prism/core/error.h>
#include <prism/models/causal_lm.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: prism_consumer <hf_dir>\n");
    return 2;
  }
  try {
    auto model = prism::models::CausalLM::from_pretrained(argv[1]);
    at::NoGradGuard ng;
    auto ids = at::arange(1, 9, at::kLong).unsqueeze(0);
    auto logits = model->forward(ids).logits;
    bool ok = logits.size(0) == 1 && logits.size(1) == 8 && logits.size(2) == model->config().vocab_size &&
              logits.isfinite().all().item<bool>();
    std::printf("prism_consumer: %s (%lld parameters, logits %lld x %lld)\n", ok ? "ok" : "FAILED",
                static_cast<long long>(model->num_parameters()), static_cast<long long>(logits.size(1)),
                static_cast<long long>(logits.size(2)));
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prism_consumer: error: %s\n", e.what());
    return 1;
  }
}
