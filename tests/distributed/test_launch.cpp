// tools/launch.sh: torchrun-like local launcher. Runs it for real (bash, prism-dist-selftest).
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "distributed/spawn_util.h"

namespace {

using namespace prism::test::dist;

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

struct Launch {
  std::string dir = prism::test::make_temp_dir("launch");
  std::string log = dir + "/launch.log";
  pid_t pid = -1;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  explicit Launch(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"/bin/bash", prism::test::source_dir() + "/tools/launch.sh"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid = spawn(argv, {}, log);
  }
  ~Launch() { prism::fs::remove_all(dir); }
  RunResult wait(double deadline_s) { return wait_all({pid}, {log}, deadline_s, start); }
  std::string output() const { return prism::fs::exists(log) ? prism::fs::read_file(log) : ""; }
};

std::string selftest() { return prism::test::bin_dir() + "/prism-dist-selftest"; }

TEST(Launch, RunsRanksAndPrefixesTheirOutput) {
  Launch l(
      {"--nproc", "2", "--master-port", std::to_string(free_port()), "--", selftest(), "all", "--timeout-ms", "30000"});
  const auto r = l.wait(180);
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.procs[0].code, 0) << r.describe();
  EXPECT_TRUE(contains(r.procs[0].log, "[rank 0] rank 0/2: all ok")) << r.describe();
  EXPECT_TRUE(contains(r.procs[0].log, "[rank 1] rank 1/2: all ok")) << r.describe();
}

TEST(Launch, SetsTheTorchrunEnvironment) {
  Launch l({"--nproc", "2", "--nnodes", "3", "--node-rank", "1", "--master-addr", "10.1.2.3", "--master-port", "1234",
            "--", selftest(), "env"});
  const auto r = l.wait(60);
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.procs[0].code, 0) << r.describe();
  EXPECT_TRUE(
      contains(r.procs[0].log, "[rank 2] RANK=2 WORLD_SIZE=6 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER=10.1.2.3:1234"))
      << r.describe();
  EXPECT_TRUE(
      contains(r.procs[0].log, "[rank 3] RANK=3 WORLD_SIZE=6 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER=10.1.2.3:1234"))
      << r.describe();
}

TEST(Launch, AFailingRankEndsTheJobPromptly) {
  // Rank 1 exits with 7 before the rendezvous; ranks 0 and 2 would wait 120 s for it.
  Launch l({"--nproc", "3", "--master-port", std::to_string(free_port()), "--", selftest(), "die_rank", "--victim", "1",
            "--code", "7", "--timeout-ms", "120000"});
  const auto r = l.wait(60);
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.procs[0].code, 7) << r.describe();
  EXPECT_LT(r.seconds, 30.0) << r.describe();
  EXPECT_TRUE(contains(r.procs[0].log, "rank 1 exited with code 7: terminating the other 2 rank(s)")) << r.describe();
}

TEST(Launch, EscalatesToSigkillAfterTheGracePeriod) {
  // Survivors that ignore SIGTERM are killed after --kill-grace seconds.
  Launch l({"--nproc", "2", "--kill-grace", "1", "--", "/bin/bash", "-c",
            "trap '' TERM; if [ \"$RANK\" = 1 ]; then exit 5; fi; sleep 60"});
  const auto r = l.wait(30);
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.procs[0].code, 5) << r.describe();
  EXPECT_LT(r.seconds, 15.0) << r.describe();
}

TEST(Launch, ForwardsSigtermToEveryRank) {
  Launch l({"--nproc", "2", "--", "/bin/bash", "-c",
            "trap 'echo got-term-$RANK; exit 0' TERM; echo ready-$RANK; while true; do sleep 0.05; done"});
  for (int i = 0; i < 400 && !(contains(l.output(), "ready-0") && contains(l.output(), "ready-1")); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_TRUE(contains(l.output(), "ready-0") && contains(l.output(), "ready-1")) << l.output();
  ::kill(l.pid, SIGTERM);
  const auto r = l.wait(60);
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.procs[0].code, 0) << r.describe();
  EXPECT_TRUE(contains(r.procs[0].log, "[rank 0] got-term-0")) << r.describe();
  EXPECT_TRUE(contains(r.procs[0].log, "[rank 1] got-term-1")) << r.describe();
}

TEST(Launch, RejectsBadArguments) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--nproc", "2"},
                                                                {"--nproc", "two", "--", "true"},
                                                                {"--bogus", "--", "true"},
                                                                {"--nnodes", "2", "--node-rank", "2", "--", "true"}}) {
    Launch l(args);
    const auto r = l.wait(30);
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.procs[0].code, 2) << r.describe();
  }
}

}  // namespace
