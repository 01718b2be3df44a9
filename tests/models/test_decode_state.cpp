// DecodeState: incremental decoding equals the uncached forward (the oracle: CausalLM::forward
// over the whole sequence, itself held to transformers by test_parity), for rows of different
// lengths decoded together, after fork / select / copy_row / reset, for dense models (incl. the
// sliding window) and hybrids (Mamba2 conv and SSM states).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <functional>

#include "prism/core/error.h"
#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "prism/models/decode_state.h"
#include "prism/models/decode_weights.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::DecodeState;
using prism::models::ForwardOptions;
using prism::test::close_rel;
using prism::test::fixture;

namespace {

std::unique_ptr<CausalLM> load(const std::string& name) { return CausalLM::from_pretrained(fixture(name)); }

// Three different sequences of 20 tokens from the fixture's input_ids.
std::vector<at::Tensor> sequences(const std::string& name) {
  auto f = prism::io::SafetensorsFile::open(fixture(name + ".ref.safetensors"));
  auto base = f->get("input_ids").clone().view({-1});
  return {base, at::roll(base, 7), base.flip(0)};
}

// Logits of an uncached forward of seq[0:len] at position pos: [V].
at::Tensor full_at(const CausalLM& m, const at::Tensor& seq, int64_t len, int64_t pos) {
  return m.forward(seq.narrow(0, 0, len).view({1, len})).logits[0][pos];
}

class DecodeStateTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeStateTest, RaggedRowsEqualSeparateRuns) {
  auto m = load(GetParam());
  at::NoGradGuard ng;
  auto seqs = sequences(GetParam());
  const std::vector<int64_t> lens{3, 9, 5};  // prompt lengths: rows hold different lengths throughout
  const int64_t steps = 7;                   // mistral's window is 6: rows 1 and 2 slide past it
  DecodeState st(*m, 3, 16);
  ForwardOptions fo;
  fo.state = &st;
  for (int64_t r = 0; r < 3; ++r) {
    fo.state_row = r;
    auto lg = m->forward(seqs[r].narrow(0, 0, lens[r]).view({1, -1}), fo).logits;
    EXPECT_TRUE(close_rel(lg[0][lens[r] - 1], full_at(*m, seqs[r], lens[r], lens[r] - 1), 1e-5, 0, "prefill"));
  }
  EXPECT_EQ(st.lengths(), (std::vector<int64_t>{3, 9, 5}));
  fo.state_row = 0;
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<int64_t> next;
    for (int64_t r = 0; r < 3; ++r) next.push_back(seqs[r][lens[r] + t].item<int64_t>());
    auto lg = m->forward(at::tensor(next, at::kLong).view({3, 1}), fo).logits;
    ASSERT_EQ(lg.sizes(), (at::IntArrayRef{3, 1, m->config().vocab_size}));
    for (int64_t r = 0; r < 3; ++r)
      ASSERT_TRUE(close_rel(lg[r][0], full_at(*m, seqs[r], lens[r] + t + 1, lens[r] + t), 1e-5, 0,
                            "row " + std::to_string(r) + " step " + std::to_string(t)));
  }
  EXPECT_EQ(st.lengths(), (std::vector<int64_t>{3 + steps, 9 + steps, 5 + steps}));
}

TEST_P(DecodeStateTest, ForkSelectCopyReset) {
  auto m = load(GetParam());
  at::NoGradGuard ng;
  auto seqs = sequences(GetParam());
  const int64_t P = 6;
  DecodeState st(*m, 4, 12);
  ForwardOptions fo;
  fo.state = &st;
  fo.last_logits_only = true;
  auto pre = m->forward(seqs[0].narrow(0, 0, P).view({1, P}), fo).logits;
  EXPECT_TRUE(close_rel(pre[0][0], full_at(*m, seqs[0], P, P - 1), 1e-5, 0, "prefill last position"));

  // fork: row 0 -> rows 0..2; each continues with another sequence's tokens.
  st.fork(1, 3);
  EXPECT_EQ(st.lengths(), (std::vector<int64_t>{P, P, P, 0}));
  std::vector<at::Tensor> cont;  // the three continued sequences: prompt of seq 0 + tokens of seq r
  for (int64_t r = 0; r < 3; ++r) cont.push_back(at::cat({seqs[0].narrow(0, 0, P), seqs[r].narrow(0, P, 6)}));
  auto step = [&](int64_t rows, const std::vector<int64_t>& which, int64_t pos) {
    std::vector<int64_t> next;
    for (int64_t b = 0; b < rows; ++b) next.push_back(cont[which[b]][pos].item<int64_t>());
    auto lg = m->forward(at::tensor(next, at::kLong).view({rows, 1}), fo).logits;
    for (int64_t b = 0; b < rows; ++b)
      EXPECT_TRUE(close_rel(lg[b][0], full_at(*m, cont[which[b]], pos + 1, pos), 1e-5, 0,
                            "row " + std::to_string(b) + " at " + std::to_string(pos)));
  };
  step(3, {0, 1, 2}, P);
  step(3, {0, 1, 2}, P + 1);

  // select: new row 0 = old row 2, new row 1 = old row 0; the rest are emptied.
  st.select({2, 0});
  EXPECT_EQ(st.lengths(), (std::vector<int64_t>{P + 2, P + 2, 0, 0}));
  step(2, {2, 0}, P + 2);

  // copy_row into a free slot: the copy continues like the original.
  st.copy_row(1, 3);
  EXPECT_EQ(st.length(3), P + 3);
  fo.state_row = 3;
  auto copied = m->forward(cont[0].narrow(0, P + 3, 1).view({1, 1}), fo).logits;
  EXPECT_TRUE(close_rel(copied[0][0], full_at(*m, cont[0], P + 4, P + 3), 1e-5, 0, "copied row"));
  fo.state_row = 0;

  // reset_row / reset: an emptied row prefills like a fresh state (no stale keys or Mamba2 state).
  st.reset_row(0);
  EXPECT_EQ(st.length(0), 0);
  auto again = m->forward(seqs[1].narrow(0, 0, 4).view({1, 4}), fo).logits;
  EXPECT_TRUE(close_rel(again[0][0], full_at(*m, seqs[1], 4, 3), 1e-5, 0, "after reset_row"));
  st.reset();
  EXPECT_EQ(st.lengths(), (std::vector<int64_t>{0, 0, 0, 0}));
  fo.state_row = 1;
  auto fresh = m->forward(seqs[2].narrow(0, 0, 5).view({1, 5}), fo).logits;
  EXPECT_TRUE(close_rel(fresh[0][0], full_at(*m, seqs[2], 5, 4), 1e-5, 0, "after reset"));
}

TEST_P(DecodeStateTest, PreallocatedBytesAndBuffersStayPut) {
  auto m = load(GetParam());
  at::NoGradGuard ng;
  const auto& c = m->config();
  int64_t expect = 0;
  for (const auto& l : c.layers)
    for (const auto& b : l.blocks) {
      if (b.kind == prism::models::BlockKind::kAttention) expect += 2 * 3 * c.num_kv_heads * 10 * c.head_dim * 4;
      if (b.kind == prism::models::BlockKind::kMamba2)
        expect += 3 * c.mamba.conv_dim() * (c.mamba.conv_kernel - 1) * 4 +
                  3 * c.mamba.num_heads * c.mamba.head_dim * c.mamba.state_size * 4;
    }
  DecodeState st(*m, 3, 10);
  EXPECT_EQ(st.bytes(), expect);
  // Masked keys still meet their values in probs @ V (0 x value): unwritten memory must be finite.
  for (auto* v : {&st.keys(), &st.values(), &st.conv_states(), &st.ssm_states()})
    for (auto& t : *v) EXPECT_TRUE(at::isfinite(t).all().item<bool>());
  std::vector<const void*> ptrs;
  for (auto& t : st.keys()) ptrs.push_back(t.data_ptr());
  for (auto& t : st.ssm_states()) ptrs.push_back(t.data_ptr());
  ForwardOptions fo;
  fo.state = &st;
  auto ids = sequences(GetParam())[0];
  m->forward(ids.narrow(0, 0, 4).view({1, 4}), fo);
  for (int i = 0; i < 5; ++i) m->forward(ids.narrow(0, 4 + i, 1).view({1, 1}), fo);
  std::vector<const void*> after;
  for (auto& t : st.keys()) after.push_back(t.data_ptr());
  for (auto& t : st.ssm_states()) after.push_back(t.data_ptr());
  EXPECT_EQ(ptrs, after) << "decoding must write into the preallocated buffers, not reallocate";
  EXPECT_EQ(st.length(0), 9);
}

// Decoding through decode weight copies (the rollout engine's CPU default) gives the logits of
// the uncached forward on the parameters themselves, prefill and ragged steps alike; the copies
// cover every matrix the family has (attention, the three MLP kinds, Mamba2 in/out_proj, lm_head).
TEST_P(DecodeStateTest, DecodeWeightsEqualTheParameters) {
  auto m = load(GetParam());
  at::NoGradGuard ng;
  auto seqs = sequences(GetParam());
  // Every matrix packed (the fixtures' are far below the 1 MiB default), to cover MKL's layout.
  prism::models::DecodeWeights dw(*m, /*min_packed_bytes=*/0);
#if defined(__x86_64__)
  EXPECT_GT(dw.packed_count(), 0) << "the x86-64 LibTorch wheel links MKL, whose packed GEMM is used";
#endif
  ASSERT_TRUE(dw.covers(m->lm_head_weight()));
  int64_t matrices = 0;
  for (const auto& [name, p] : m->named_parameters())
    if (p.dim() == 2 && dw.covers(p)) ++matrices;
  EXPECT_GE(matrices, 2 * m->config().num_layers()) << "every layer has at least two matrices";
  EXPECT_FALSE(dw.covers(m->named_parameters().front().second.clone())) << "keyed by the parameter object";
  EXPECT_FALSE(dw.linear(at::ones({1, m->config().hidden_size}), m->lm_head_weight().clone(), {}).defined());
  // Every row count through the same copy (MKL packs once for all of them), in both layouts,
  // against a float64 product of the parameters; with a bias, and with leading batch dims.
  prism::models::DecodeWeights plain(*m, /*min_packed_bytes=*/INT64_MAX);
  EXPECT_EQ(plain.packed_count(), 0);
  EXPECT_EQ(plain.bytes(), dw.bytes());
  const auto& w = m->lm_head_weight();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int64_t rows : {1, 2, 3, 17, 64, 100}) {
    auto x = at::randn({rows, w.size(1)}, gen);
    auto bias = at::randn({w.size(0)}, gen);
    const auto bias_before = bias.clone();
    auto want = at::linear(x.to(at::kDouble), w.to(at::kDouble), bias.to(at::kDouble));
    const double tol = 1e-6 * (1.0 + want.abs().max().item<double>());
    for (const auto* d : {&dw, &plain}) {
      auto y = d->linear(x.view({1, rows, -1}), w, bias);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, rows, w.size(0)}));
      EXPECT_LT((y[0].to(at::kDouble) - want).abs().max().item<double>(), tol)
          << rows << " rows, packed copies " << d->packed_count();
      EXPECT_TRUE(at::equal(bias, bias_before)) << "the bias is an input, never written";
      EXPECT_LT((d->linear(x, w, {}).to(at::kDouble) - (want - bias.to(at::kDouble))).abs().max().item<double>(), tol);
    }
  }
  const std::vector<int64_t> lens{4, 8};
  DecodeState st(*m, 2, 16);
  ForwardOptions fo;
  fo.state = &st;
  fo.decode_weights = &dw;
  for (int64_t r = 0; r < 2; ++r) {
    fo.state_row = r;
    auto lg = m->forward(seqs[r].narrow(0, 0, lens[r]).view({1, -1}), fo).logits;
    EXPECT_TRUE(close_rel(lg[0][lens[r] - 1], full_at(*m, seqs[r], lens[r], lens[r] - 1), 1e-5, 0, "prefill"));
  }
  fo.state_row = 0;
  for (int64_t t = 0; t < 5; ++t) {
    std::vector<int64_t> next;
    for (int64_t r = 0; r < 2; ++r) next.push_back(seqs[r][lens[r] + t].item<int64_t>());
    auto lg = m->forward(at::tensor(next, at::kLong).view({2, 1}), fo).logits;
    for (int64_t r = 0; r < 2; ++r)
      ASSERT_TRUE(close_rel(lg[r][0], full_at(*m, seqs[r], lens[r] + t + 1, lens[r] + t), 1e-5, 0,
                            "row " + std::to_string(r) + " step " + std::to_string(t)));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecodeStateTest,
                         ::testing::Values("llama", "mistral", "granite", "nemotron_h", "granite4_hybrid", "bamba"));

TEST(DecodeStateErrors, MisuseIsRefusedWithAMessage) {
  auto m = load("granite4_hybrid");
  at::NoGradGuard ng;
  auto ids = sequences("granite4_hybrid")[0];
  DecodeState st(*m, 2, 8);
  ForwardOptions fo;
  fo.state = &st;
  auto msg = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const prism::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg([&] { m->forward(ids.narrow(0, 0, 9).view({1, 9}), fo); }).find("max_length 8"), std::string::npos);
  fo.state_row = 1;
  EXPECT_NE(msg([&] { m->forward(ids.narrow(0, 0, 4).view({2, 2}), fo); }).find("do not fit"), std::string::npos);
  fo.state_row = 0;
  m->forward(ids.narrow(0, 0, 3).view({1, 3}), fo);  // row 0 holds 3, row 1 holds 0
  EXPECT_NE(msg([&] { m->forward(ids.narrow(0, 0, 4).view({2, 2}), fo); }).find("one token at a time"),
            std::string::npos);
  ForwardOptions pad = fo;
  pad.attention_mask = at::ones({2, 1}, at::kLong);
  EXPECT_NE(msg([&] { m->forward(ids.narrow(0, 0, 2).view({2, 1}), pad); }).find("attention_mask"), std::string::npos);
  auto dense = load("llama");
  EXPECT_NE(msg([&] { dense->forward(ids.narrow(0, 0, 1).view({1, 1}), fo); }).find("another architecture"),
            std::string::npos);
  EXPECT_NE(msg([&] { st.copy_row(0, 5); }).find("out of range"), std::string::npos);
  EXPECT_NE(msg([&] { st.fork(2, 2); }).find("do not fit"), std::string::npos);
  prism::models::DecodeWeights dw(*m);
  ForwardOptions with_grad;
  with_grad.decode_weights = &dw;
  {
    at::AutoGradMode grad(true);
    EXPECT_NE(msg([&] { m->forward(ids.narrow(0, 0, 2).view({1, 2}), with_grad); }).find("grad mode off"),
              std::string::npos);
  }
}

}  // namespace
