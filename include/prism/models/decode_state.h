// DecodeState: what incremental decoding keeps between forward calls, for a fixed number of rows
// (decode slots) and a fixed maximum length, allocated once: attention keys/values (rotated keys,
// as transformers caches them), Mamba2 conv inputs and SSM states, and the length of every row.
//
// Why fixed: a rollout engine decodes thousands of sequences through a few slots; growing buffers
// by copying (the old InferenceCache) costs a full copy per growth and makes memory use depend on
// the workload. Here memory is known up front (bytes()) and rows are recycled: a finished
// sequence's slot is reset or overwritten by another row (copy_row), a prompt prefilled once is
// repeated into n rows (fork / copy_row), and rows of different lengths decode in one forward
// (attention masks each row to its own keys).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace prism::models {

class CausalLM;

class DecodeState {
 public:
  /// Allocates `rows` rows of up to `max_length` tokens on the model's device, in the model's
  /// dtype (SSM states fp32). All rows start empty.
  DecodeState(const CausalLM& model, int64_t rows, int64_t max_length);

  int64_t rows() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t max_length() const { return max_length_; }
  /// Tokens held by each row.
  const std::vector<int64_t>& lengths() const { return lengths_; }
  int64_t length(int64_t row) const;
  /// Bytes of every buffer (KV, conv, SSM), allocated at construction.
  int64_t bytes() const;

  /// Empties every row (lengths 0, Mamba2 states zeroed; stale keys are never read).
  void reset();
  /// Empties one row.
  void reset_row(int64_t row);
  /// Row `dst` becomes a copy of row `src` (only the `src` length of KV is copied).
  void copy_row(int64_t src, int64_t dst);
  /// Row `dst` of this state becomes a copy of row `src_row` of `src` (another state of the same
  /// model, any row count and a max length that fits).
  void copy_row_from(const DecodeState& src, int64_t src_row, int64_t dst_row);
  /// Repeats each of the first `count` rows `n` times: old row i becomes rows i*n .. i*n+n-1
  /// (prefill once, sample n times). Needs count * n <= rows(); rows beyond count * n are emptied.
  void fork(int64_t count, int64_t n);
  /// Keeps a subset of rows, in the given order: new row j = old row keep[j] (indices may repeat);
  /// rows beyond keep.size() are emptied.
  void select(const std::vector<int64_t>& keep);

  // Buffers read and written by CausalLM::forward (one entry per attention / Mamba2 block, in
  // layer order). Rows of different lengths share the buffers; row r's valid keys are [0, length(r)).
  std::vector<at::Tensor>& keys() { return keys_; }      ///< [rows, Hkv, max_length, d]
  std::vector<at::Tensor>& values() { return values_; }  ///< same
  std::vector<at::Tensor>& conv_states() { return conv_; }  ///< [rows, conv_dim, K-1] last conv inputs
  std::vector<at::Tensor>& ssm_states() { return ssm_; }    ///< [rows, H, P, N] fp32
  /// Called by forward after appending `tokens` to rows [row0, row0 + n).
  void advance(int64_t row0, int64_t n, int64_t tokens);

 private:
  void check_row(int64_t row, const char* what) const;
  std::vector<at::Tensor> keys_, values_, conv_, ssm_;
  std::vector<int64_t> lengths_;
  int64_t max_length_ = 0;
};

}  // namespace prism::models
