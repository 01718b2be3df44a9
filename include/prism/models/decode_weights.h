// DecodeWeights: a decode-time copy of a model's matrices, transposed to [in, out] and contiguous.
//
// Why: forward multiplies activations by W^T of the [out, in] parameters (at::linear). For the
// few rows of a decode step, MKL copies (packs) the transposed weight on every call, which is about
// a fifth of the CPU decode time of a batch of 64 rows and as much memory traffic as the product
// itself; with [in, out] copies the product runs without that (docs/PERFORMANCE.md, "Generation").
// The cost: one more copy of every matrix (lm_head included) in memory, and a refresh() after the
// parameters change. Results equal at::linear's up to fp32 rounding of a different summation
// order (the engine's log-probs stay within the tests' 1e-5 of the teacher-forced forward).
//
// The copies are keyed by the live parameter tensors: forward (ForwardOptions::decode_weights)
// uses the copy of a weight only while that tensor object is still the model's parameter; a
// parameter replaced by another tensor falls back to at::linear on the live tensor. Parameters
// updated in place (an optimizer step) are NOT seen until refresh(): the owner (the rollout
// engine) refreshes before every generate call.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <unordered_map>

namespace prism::models {

class CausalLM;

class DecodeWeights {
 public:
  /// Allocates and fills the copies of every matrix parameter and the lm_head of `model` (which
  /// must outlive this object).
  explicit DecodeWeights(const CausalLM& model);

  /// Copies the live parameters again (reallocating a copy only when its parameter's shape,
  /// dtype or device changed, and re-keying by the current parameter tensors).
  void refresh();
  /// Bytes held by the copies.
  int64_t bytes() const { return bytes_; }
  /// The [in, out] copy of parameter `w`, or nullptr when `w` is not one of the copied parameters.
  const at::Tensor* transposed(const at::Tensor& w) const;

 private:
  const CausalLM& model_;
  std::unordered_map<const void*, at::Tensor> copies_;  // key: the parameter's TensorImpl
  int64_t bytes_ = 0;
};

}  // namespace prism::models
