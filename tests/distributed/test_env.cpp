// DistEnv parsing: the torchrun contract, and errors that name the variable and its value.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "prism/core/error.h"
#include "prism/distributed/communicator.h"

namespace {

using prism::distributed::DistEnv;

DistEnv parse(const std::map<std::string, std::string>& vars) {
  return DistEnv::parse([&](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

/// The error message for `vars`, or "" when parsing succeeds.
std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    parse(vars);
  } catch (const prism::Error& e) {
    return e.what();
  }
  return "";
}

const std::map<std::string, std::string> kFull = {{"RANK", "3"},
                                                  {"WORLD_SIZE", "8"},
                                                  {"LOCAL_RANK", "1"},
                                                  {"LOCAL_WORLD_SIZE", "2"},
                                                  {"MASTER_ADDR", "node7"},
                                                  {"MASTER_PORT", "29511"}};

std::map<std::string, std::string> with(std::map<std::string, std::string> m, const std::string& k,
                                        const std::string& v) {
  m[k] = v;
  return m;
}

std::map<std::string, std::string> without(std::map<std::string, std::string> m, const std::string& k) {
  m.erase(k);
  return m;
}

TEST(DistEnv, NothingSetMeansSingleProcess) {
  const auto env = parse({});
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.local_world_size, 1);
}

TEST(DistEnv, ReadsTorchrunVariables) {
  const auto env = parse(kFull);
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "node7");
  EXPECT_EQ(env.master_port, 29511);
}

TEST(DistEnv, LocalVariablesDefaultFromGlobalOnes) {
  const auto env = parse(without(without(kFull, "LOCAL_RANK"), "LOCAL_WORLD_SIZE"));
  EXPECT_EQ(env.local_world_size, 8);
  EXPECT_EQ(env.local_rank, 3);
  const auto single = parse({{"RANK", "0"}, {"WORLD_SIZE", "1"}});  // no MASTER_* needed for one process
  EXPECT_EQ(single.world_size, 1);
}

TEST(DistEnv, RejectsNonIntegers) {
  for (const char* bad : {"abc", "", "1.5", " 1", "2x", "-", "99999999999999999999"}) {
    const auto msg = error_of(with(kFull, "RANK", bad));
    EXPECT_NE(msg.find("RANK"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << msg;
  }
  const auto msg = error_of(with(kFull, "WORLD_SIZE", "eight"));
  EXPECT_NE(msg.find("WORLD_SIZE"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'eight'"), std::string::npos) << msg;
}

TEST(DistEnv, RejectsOutOfRangeValues) {
  auto msg = error_of(with(kFull, "RANK", "8"));
  EXPECT_NE(msg.find("RANK"), std::string::npos) << msg;
  EXPECT_NE(msg.find("WORLD_SIZE=8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'8'"), std::string::npos) << msg;
  EXPECT_NE(error_of(with(kFull, "RANK", "-1")).find("RANK"), std::string::npos);
  EXPECT_NE(error_of(with(kFull, "WORLD_SIZE", "0")).find("WORLD_SIZE"), std::string::npos);
  msg = error_of(with(kFull, "LOCAL_RANK", "2"));
  EXPECT_NE(msg.find("LOCAL_RANK"), std::string::npos) << msg;
  EXPECT_NE(msg.find("LOCAL_WORLD_SIZE=2"), std::string::npos) << msg;
  EXPECT_NE(error_of(with(kFull, "LOCAL_WORLD_SIZE", "9")).find("LOCAL_WORLD_SIZE"), std::string::npos);
  msg = error_of(with(kFull, "MASTER_PORT", "70000"));
  EXPECT_NE(msg.find("MASTER_PORT"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'70000'"), std::string::npos) << msg;
  EXPECT_NE(error_of(with(kFull, "MASTER_PORT", "0")).find("MASTER_PORT"), std::string::npos);
  EXPECT_NE(error_of(with(kFull, "MASTER_ADDR", "")).find("MASTER_ADDR"), std::string::npos);
}

TEST(DistEnv, RejectsHalfAnEnvironment) {
  auto msg = error_of({{"RANK", "0"}});
  EXPECT_NE(msg.find("WORLD_SIZE"), std::string::npos) << msg;
  msg = error_of(without(kFull, "RANK"));
  EXPECT_NE(msg.find("RANK"), std::string::npos) << msg;
  msg = error_of(without(kFull, "MASTER_ADDR"));
  EXPECT_NE(msg.find("MASTER_ADDR"), std::string::npos) << msg;
  msg = error_of(without(kFull, "MASTER_PORT"));
  EXPECT_NE(msg.find("MASTER_PORT"), std::string::npos) << msg;
}

TEST(DistEnv, ErrorsCarryContext) {
  try {
    parse(with(kFull, "RANK", "x"));
    FAIL() << "no error";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.context().key, "RANK");
    EXPECT_EQ(e.context().found, "'x'");
    EXPECT_FALSE(e.context().expected.empty());
  }
}

TEST(DistEnv, FromEnvReadsTheProcessEnvironment) {
  // The test runner does not set a torchrun environment (tests/distributed/spawn_util.h strips it for
  // the children it starts); if one is set, from_env must at least agree with parse over getenv.
  if (std::getenv("WORLD_SIZE") == nullptr && std::getenv("RANK") == nullptr) {
    const auto env = DistEnv::from_env();
    EXPECT_EQ(env.world_size, 1);
    EXPECT_EQ(env.rank, 0);
  } else {
    GTEST_SKIP() << "a torchrun environment is set for the test process";
  }
}

}  // namespace
