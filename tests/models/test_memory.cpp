// check_fits / parameter_count (prism/models/memory.h). Oracles: the parameter count of the model
// actually built on the meta device, and configs whose sizes exceed any machine's memory.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/models/causal_lm.h"
#include "prism/models/memory.h"
#include "prism/runtime/runtime.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::test::fixture;

namespace {

class ParameterCount : public ::testing::TestWithParam<std::string> {};

// The count from the config alone equals what from_config builds, for every family (tied and
// untied heads, hybrids with several layer kinds).
TEST_P(ParameterCount, EqualsTheBuiltModel) {
  const auto cfg = CausalLM::read_config(fixture(GetParam()));
  prism::models::LoadOptions lo;
  lo.device = "meta";
  auto model = CausalLM::from_config(cfg, lo);
  EXPECT_EQ(CausalLM::parameter_count(cfg), static_cast<double>(model->num_parameters()));
  EXPECT_EQ(prism::models::parameter_bytes(cfg, at::kBFloat16, 4.0),
            8.0 * static_cast<double>(model->num_parameters()));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParameterCount, ::testing::ValuesIn(prism::test::model_fixtures()));

// Issue 13 item 6: `model.init: scratch` with an absurd config grew until the OOM killer.
TEST(CheckFits, RefusesWhatCannotFitNamingTheKeysBeforeAllocating) {
  auto cfg = CausalLM::read_config(fixture("llama"));
  const auto layer = cfg.layers.at(0);
  cfg.layers.assign(60000, layer);
  cfg.hidden_size = 1 << 16;
  cfg.intermediate_size = 1 << 18;
  cfg.head_dim = cfg.hidden_size / cfg.num_heads;
  // ~60000 x 4.3e10 parameters: no machine has that; the meta device always fits.
  prism::models::LoadOptions lo;
  lo.device = "meta";
  EXPECT_NO_THROW(prism::models::check_fits(cfg, at::kFloat, at::Device("meta")));
  lo.device = "cpu";
  try {
    CausalLM::from_config(cfg, lo);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("num_hidden_layers: the model does not fit: its parameters need ", 0), 0u) << m;
    EXPECT_NE(m.find("in num_hidden_layers = 60000 layers (hidden_size = 65536, intermediate_size = 262144)"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("(vocab_size = 128 x hidden_size = 65536)"), std::string::npos) << m;
  }
  // The same refusal through from_pretrained names the config.json.
  const std::string dir = prism::test::make_temp_dir("fits") + "/ckpt";
  prism::fs::copy_tree(fixture("llama"), dir);
  auto j = nlohmann::json::parse(prism::fs::read_file(dir + "/config.json"));
  j["vocab_size"] = int64_t{1} << 31;
  j["hidden_size"] = int64_t{1} << 20;
  prism::fs::write_file_atomic(dir + "/config.json", j.dump());
  try {
    CausalLM::from_pretrained(dir);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(dir + "/config.json: vocab_size: the model does not fit", 0), 0u) << m;
  }
  prism::fs::remove_all(prism::fs::parent(dir));
}

TEST(CheckFits, AModelThatFitsPasses) {
  const auto cfg = CausalLM::read_config(fixture("llama"));
  ASSERT_GT(prism::runtime::available_memory_bytes(at::Device("cpu")), 0) << "MemAvailable unreadable";
  EXPECT_NO_THROW(prism::models::check_fits(cfg, at::kFloat, at::Device("cpu"), 4.0, "llama/config.json"));
}

}  // namespace
