// DecodeWeights: decode-time copies of a model's matrices, laid out for the few-row products of a
// decode step.
//
// Why: forward multiplies activations by W^T of the [out, in] parameters (at::linear). For the
// few rows of a decode step MKL packs the weight into its blocked layout on every call: about a
// fifth of the CPU decode time of a batch of 64 rows, and as much memory traffic as the product
// itself. The copies are packed once per refresh() instead: on CPU in fp32 (matrices of 1 MiB or
// more by default), in MKL's own packed layout (cblas_sgemm_pack, found at run time in the MKL
// that LibTorch links; the products then run cblas_sgemm_compute, no packing per call); elsewhere,
// or when that MKL is absent, as contiguous [in, out] transposes multiplied with at::mm (MKL's
// no-copy kernels). Numbers in docs/PERFORMANCE.md, "Generation".
// The cost: one more copy of every matrix (lm_head included) and a refresh() after the parameters
// change. MKL reserves more address space for a packed matrix than the packed data (up to ~2x for
// the lm_head, +9 MB per matrix); those buffers are mapped outside c10's allocator and the pages
// beyond the data are never written, so they take no memory (bytes() counts the data). Results
// equal at::linear's up to fp32 rounding of a different summation order (the engine's log-probs
// stay within the tests' 1e-5 of the teacher-forced forward).
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
  /// Matrices of at least this many bytes are packed (when MKL's packed GEMM is available).
  static constexpr int64_t kDefaultMinPackedBytes = int64_t{1} << 20;
  /// Allocates and fills the copies of every matrix parameter and the lm_head of `model` (which
  /// must outlive this object). Smaller matrices than `min_packed_bytes` are [in, out] transposes
  /// (MKL multiplies those without packing anyway, and each packed buffer reserves ~9 MB of
  /// address space); INT64_MAX keeps every copy a transpose, 0 packs every fp32 CPU matrix.
  explicit DecodeWeights(const CausalLM& model, int64_t min_packed_bytes = kDefaultMinPackedBytes);

  /// Copies the live parameters again (reallocating a copy only when its parameter's shape,
  /// dtype or device changed, and re-keying by the current parameter tensors).
  void refresh();
  /// Bytes of copied data (what the copies occupy in memory).
  int64_t bytes() const { return bytes_; }
  /// How many copies are in MKL's packed layout (the others are [in, out] transposes).
  int64_t packed_count() const { return packed_count_; }
  /// Whether `w` (this very tensor object) has a copy.
  bool covers(const at::Tensor& w) const { return copies_.count(w.unsafeGetTensorImpl()) != 0; }
  /// x [..., in] @ w^T (+ bias), through the copy of parameter `w` ([out, in]): at::linear(x, w,
  /// bias) up to fp32 rounding. Undefined when `w` has no copy (see covers()), or when its copy is
  /// packed and x is not fp32 on the CPU: the caller then runs at::linear.
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const;

 private:
  struct Copy {
    at::Tensor data;  // packed: MKL's buffer (bytes); otherwise the [in, out] transpose
    int64_t in = 0, out = 0;
    bool packed = false;
  };
  const CausalLM& model_;
  int64_t min_packed_bytes_;
  std::unordered_map<const void*, Copy> copies_;  // key: the parameter's TensorImpl
  int64_t bytes_ = 0;
  int64_t packed_count_ = 0;
};

}  // namespace prism::models
