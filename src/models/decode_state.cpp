// DecodeState: preallocated per-row decode buffers (see the header for why). Row operations copy
// only what a row holds (its first length(row) keys), so moving a short sequence between slots
// does not cost a full max_length copy.
#include "prism/models/decode_state.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "prism/core/error.h"
#include "prism/models/causal_lm.h"

namespace prism::models {

DecodeState::DecodeState(const CausalLM& model, int64_t rows, int64_t max_length) : max_length_(max_length) {
  PRISM_CHECK(rows > 0, "DecodeState: rows must be > 0, got ", rows);
  PRISM_CHECK(max_length > 0, "DecodeState: max_length must be > 0, got ", max_length);
  PRISM_CHECK(model.device().type() != at::kMeta, "DecodeState: the model is on the meta device (no weights)");
  const auto& c = model.config();
  auto opts = at::TensorOptions().dtype(model.dtype()).device(model.device());
  for (const auto& layer : c.layers) {
    for (const auto& b : layer.blocks) {
      if (b.kind == BlockKind::kAttention) {
        // Zeroed once: a masked key still meets its value in probs @ V (0 x value), so unwritten
        // memory must not hold NaN/Inf. Later contents are always finite outputs of the model.
        keys_.push_back(at::zeros({rows, c.num_kv_heads, max_length, c.head_dim}, opts));
        values_.push_back(at::zeros({rows, c.num_kv_heads, max_length, c.head_dim}, opts));
      } else if (b.kind == BlockKind::kMamba2) {
        const auto& m = c.mamba;
        conv_.push_back(at::zeros({rows, m.conv_dim(), m.conv_kernel - 1}, opts));
        ssm_.push_back(at::zeros({rows, m.num_heads, m.head_dim, m.state_size}, opts.dtype(at::kFloat)));
      }
    }
  }
  lengths_.assign(rows, 0);
}

int64_t DecodeState::length(int64_t row) const {
  check_row(row, "length");
  return lengths_[row];
}

int64_t DecodeState::bytes() const {
  int64_t n = 0;
  for (const auto* v : {&keys_, &values_, &conv_, &ssm_})
    for (const auto& t : *v) n += t.numel() * static_cast<int64_t>(t.element_size());
  return n;
}

void DecodeState::check_row(int64_t row, const char* what) const {
  PRISM_CHECK(row >= 0 && row < rows(), "DecodeState::", what, ": row ", row, " out of range [0, ", rows(), ")");
}

void DecodeState::reset() {
  at::NoGradGuard ng;
  for (auto& t : conv_) t.zero_();
  for (auto& t : ssm_) t.zero_();
  std::fill(lengths_.begin(), lengths_.end(), 0);
}

void DecodeState::reset_row(int64_t row) {
  check_row(row, "reset_row");
  at::NoGradGuard ng;
  for (auto& t : conv_) t.select(0, row).zero_();
  for (auto& t : ssm_) t.select(0, row).zero_();
  lengths_[row] = 0;
}

void DecodeState::copy_row_from(const DecodeState& src, int64_t src_row, int64_t dst_row) {
  src.check_row(src_row, "copy_row_from (source)");
  check_row(dst_row, "copy_row_from");
  PRISM_CHECK(src.keys_.size() == keys_.size() && src.ssm_.size() == ssm_.size(),
              "DecodeState::copy_row_from: the states belong to different architectures");
  const int64_t len = src.lengths_[src_row];
  PRISM_CHECK(len <= max_length_, "DecodeState::copy_row_from: source row holds ", len,
              " tokens, more than this state's max_length ", max_length_);
  if (&src == this && src_row == dst_row) return;
  at::NoGradGuard ng;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (len == 0) break;
    keys_[i].select(0, dst_row).narrow(1, 0, len).copy_(src.keys_[i].select(0, src_row).narrow(1, 0, len));
    values_[i].select(0, dst_row).narrow(1, 0, len).copy_(src.values_[i].select(0, src_row).narrow(1, 0, len));
  }
  for (size_t i = 0; i < conv_.size(); ++i) {
    conv_[i].select(0, dst_row).copy_(src.conv_[i].select(0, src_row));
    ssm_[i].select(0, dst_row).copy_(src.ssm_[i].select(0, src_row));
  }
  lengths_[dst_row] = len;
}

void DecodeState::copy_row(int64_t src, int64_t dst) { copy_row_from(*this, src, dst); }

void DecodeState::fork(int64_t count, int64_t n) {
  PRISM_CHECK(count >= 0 && n >= 1 && count * n <= rows(), "DecodeState::fork: ", count, " rows x ", n,
              " copies do not fit in ", rows(), " rows");
  // Last row first: every destination i*n+j is >= i, so no source row is overwritten before it is read.
  for (int64_t i = count - 1; i >= 0; --i)
    for (int64_t j = n - 1; j >= 0; --j) copy_row(i, i * n + j);
  for (int64_t r = count * n; r < rows(); ++r) reset_row(r);
}

void DecodeState::select(const std::vector<int64_t>& keep) {
  const int64_t m = static_cast<int64_t>(keep.size());
  PRISM_CHECK(m <= rows(), "DecodeState::select: ", m, " rows requested, the state has ", rows());
  for (auto r : keep) check_row(r, "select");
  at::NoGradGuard ng;
  if (m > 0) {
    auto idx = at::tensor(keep, at::kLong).to(keys_.empty() ? (ssm_.empty() ? at::kCPU : ssm_[0].device())
                                                            : keys_[0].device());
    int64_t maxlen = 0;
    for (auto r : keep) maxlen = std::max(maxlen, lengths_[r]);
    // Gather into temporaries first: a destination row may be another destination's source.
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (maxlen == 0) break;
      for (auto* v : {&keys_, &values_}) {
        auto g = (*v)[i].narrow(2, 0, maxlen).index_select(0, idx);
        (*v)[i].narrow(0, 0, m).narrow(2, 0, maxlen).copy_(g);
      }
    }
    for (size_t i = 0; i < conv_.size(); ++i) {
      conv_[i].narrow(0, 0, m).copy_(conv_[i].index_select(0, idx));
      ssm_[i].narrow(0, 0, m).copy_(ssm_[i].index_select(0, idx));
    }
  }
  std::vector<int64_t> lens(rows(), 0);
  for (int64_t j = 0; j < m; ++j) lens[j] = lengths_[keep[j]];
  lengths_ = std::move(lens);
  for (int64_t r = m; r < rows(); ++r) reset_row(r);
}

void DecodeState::advance(int64_t row0, int64_t n, int64_t tokens) {
  for (int64_t r = row0; r < row0 + n; ++r) {
    check_row(r, "advance");
    PRISM_CHECK(lengths_[r] + tokens <= max_length_, "DecodeState: row ", r, " would hold ", lengths_[r] + tokens,
                " tokens, more than max_length ", max_length_);
    lengths_[r] += tokens;
  }
}

}  // namespace prism::models
