// The checkpoint as a custom autograd Function (build-and-libtorch.md §3). Two LibTorch details
// shape it: Function::apply registers only Tensor and TensorList arguments as graph inputs (a
// std::vector<Tensor> would be skipped silently and parameters would get no gradient), and the
// layer closure has to survive until backward, so it rides in the context as an IValue capsule.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "models/activation_checkpoint.h"
#include "prism/core/error.h"

namespace prism::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LayerFnHolder : torch::CustomClassHolder {
  explicit LayerFnHolder(LayerFn f) : fn(std::move(f)) {}
  LayerFn fn;
};

struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  // Flattened inputs: 0 = input, 1..P = params, P+1 = fn (not a tensor; gets no gradient).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, at::TensorList params, const LayerFn& fn) {
    // apply() runs this with grad mode off: fn records no graph, so its intermediates are freed
    // as soon as it returns. Only the input and references to the parameters are kept.
    auto out = fn(input);
    std::vector<at::Tensor> saved{input};
    saved.insert(saved.end(), params.begin(), params.end());
    // Saving the parameters costs nothing (no copy) and lets autograd's version counters catch an
    // optimizer step that modified them between this forward and its backward.
    ctx->save_for_backward(saved);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<LayerFnHolder>(fn));
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    PRISM_CHECK(!at::GradMode::is_enabled(),
                "activation checkpointing: double backward (create_graph=true) is not supported");
    auto saved = ctx->get_saved_variables();
    auto holder = c10::static_intrusive_pointer_cast<LayerFnHolder>(ctx->saved_data["fn"].toCapsule());
    const size_t num_params = saved.size() - 1;
    variable_list grads(num_params + 2);  // + input, + fn
    // Recompute on a detached input: the new graph must end here, not run into earlier layers.
    auto x = saved[0].detach().requires_grad_(ctx->needs_input_grad(0));
    variable_list wrt;
    std::vector<size_t> slot;
    if (ctx->needs_input_grad(0)) wrt.push_back(x), slot.push_back(0);
    for (size_t i = 0; i < num_params; ++i) {
      if (!ctx->needs_input_grad(i + 1)) continue;  // frozen (requires_grad = false) or not asked for
      wrt.push_back(saved[i + 1]);
      slot.push_back(i + 1);
    }
    if (wrt.empty()) return grads;
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      out = holder->fn(x);
    }
    // allow_unused: a parameter the layer does not touch gets an undefined gradient, as without
    // checkpointing.
    auto g = torch::autograd::grad({out}, wrt, {grad_out[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    for (size_t k = 0; k < slot.size(); ++k) grads[slot[k]] = g[k];
    return grads;
  }
};

}  // namespace

at::Tensor checkpointed(LayerFn fn, const at::Tensor& input, at::TensorList params) {
  for (size_t i = 0; i < params.size(); ++i)
    PRISM_CHECK(params[i].defined(), "activation checkpointing: parameter ", i, " of the layer is undefined");
  return CheckpointedLayer::apply(input, params, fn);
}

}  // namespace prism::models
