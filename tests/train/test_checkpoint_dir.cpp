// Checkpoint directories: commit / prune / latest, leftovers of simulated crashes are ignored and
// cleaned, and a real crash: a child process (this test binary, re-run with a filter and an env
// var) writing a large checkpoint slowly is SIGKILLed midway.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/train/checkpoint_dir.h"

extern char** environ;

namespace prism::train {
namespace {

constexpr const char* kChildEnv = "PRISM_CKPT_CRASH_CHILD_OUT";

struct TempDir {
  std::string path = fs::make_temp_dir("prism_test_ckpt_");
  ~TempDir() { fs::remove_all(path); }
};

// begin + one payload file + commit.
std::string save(CheckpointDir& c, std::int64_t step, const std::string& payload) {
  const std::string tmp = c.begin(step);
  fs::write_file_atomic(fs::join(tmp, "model.bin"), payload);
  return c.commit(tmp, step);
}

// The pid of a process that has exited (and been reaped).
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

TEST(CheckpointDir, CommitPruneLatest) {
  TempDir out;
  EXPECT_FALSE(CheckpointDir::latest_complete(out.path));  // no checkpoints dir at all
  CheckpointDir c(out.path, /*keep_last=*/2);
  const std::string d100 = save(c, 100, "a");
  EXPECT_EQ(d100, fs::join(out.path, "checkpoints/step-00000100"));
  EXPECT_EQ(CheckpointDir::latest_complete(out.path), d100);
  save(c, 200, "b");
  save(c, 300, "c");
  EXPECT_EQ(CheckpointDir::complete_steps(out.path), (std::vector<std::int64_t>{200, 300}));
  EXPECT_EQ(CheckpointDir::latest_complete(out.path), c.path_for(300));
  EXPECT_EQ(fs::read_file(fs::join(c.path_for(300), "model.bin")), "c");
  // Nothing else left behind: no temp directories, no pruned directory.
  EXPECT_EQ(fs::list_dir(c.root()), (std::vector<std::string>{"step-00000200", "step-00000300"}));

  const auto marker = nlohmann::json::parse(fs::read_file(fs::join(c.path_for(300), "COMPLETE")));
  EXPECT_EQ(marker.at("step"), 300);
  EXPECT_GT(marker.at("time").get<double>(), 1.6e9);
}

TEST(CheckpointDir, KeepAllAndReplaceSameStep) {
  TempDir out;
  CheckpointDir c(out.path);  // keep_last 0: keep all
  for (int s = 1; s <= 4; ++s) save(c, s, "x");
  EXPECT_EQ(CheckpointDir::complete_steps(out.path).size(), 4u);
  save(c, 4, "replaced");
  EXPECT_EQ(fs::read_file(fs::join(c.path_for(4), "model.bin")), "replaced");
  EXPECT_EQ(fs::list_dir(c.root()).size(), 4u);  // the old copy of step 4 is gone
}

TEST(CheckpointDir, BeginRemovesLeftoverOfSameName) {
  TempDir out;
  CheckpointDir c(out.path);
  const std::string tmp = c.begin(5);
  fs::write_file_atomic(fs::join(tmp, "junk"), "j");
  EXPECT_EQ(c.begin(5), tmp);
  EXPECT_TRUE(fs::list_dir(tmp).empty());
  EXPECT_EQ(tmp, c.path_for(5) + ".tmp-" + std::to_string(::getpid()));
}

TEST(CheckpointDir, SimulatedCrashLeftoversAreIgnoredAndCleaned) {
  TempDir out;
  CheckpointDir c(out.path, 0);
  save(c, 300, "good");
  const std::string root = c.root();
  // A dead writer's temp dir, even one that got as far as writing the marker.
  const std::string stale = c.path_for(400) + ".tmp-" + std::to_string(dead_pid());
  fs::create_directories(stale);
  fs::write_file_atomic(fs::join(stale, "COMPLETE"), "{\"step\":400}");
  // A live writer's temp dir (our parent process stands in for another live process).
  const std::string live = c.path_for(450) + ".tmp-" + std::to_string(::getppid());
  fs::create_directories(live);
  // A final-named dir without marker, and one whose marker names another step.
  fs::create_directories(c.path_for(500));
  fs::create_directories(c.path_for(600));
  fs::write_file_atomic(fs::join(c.path_for(600), "COMPLETE"), "{\"step\":7}");
  fs::create_directories(c.path_for(700));
  fs::write_file_atomic(fs::join(c.path_for(700), "COMPLETE"), "not json");
  // Foreign names are not checkpoints.
  fs::create_directories(fs::join(root, "step-123"));
  fs::create_directories(fs::join(root, "step-000000800"));

  EXPECT_EQ(CheckpointDir::latest_complete(out.path), c.path_for(300));
  save(c, 310, "next");  // commit prunes the stale temp dir of the dead writer only
  EXPECT_EQ(CheckpointDir::latest_complete(out.path), c.path_for(310));
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(c.path_for(500)));  // incomplete final dirs are left for a human to inspect
}

// Issue 13 #2: a streak of unhealthy checkpoints (written while steps were being skipped) must not
// prune the last checkpoint worth resuming from.
TEST(CheckpointDir, NewestHealthyCheckpointIsNeverPruned) {
  TempDir out;
  CheckpointDir c(out.path, /*keep_last=*/1);
  save(c, 4, "good");
  for (std::int64_t s : {6, 8}) {
    const std::string tmp = c.begin(s);
    fs::write_file_atomic(fs::join(tmp, "model.bin"), "diverged");
    c.commit(tmp, s, /*healthy=*/false);
  }
  EXPECT_EQ(CheckpointDir::complete_steps(out.path), (std::vector<std::int64_t>{4, 8}));
  EXPECT_EQ(CheckpointDir::latest_healthy(out.path), 4);
  // A healthy checkpoint again: then keep_last alone decides.
  save(c, 10, "good again");
  EXPECT_EQ(CheckpointDir::complete_steps(out.path), (std::vector<std::int64_t>{10}));
  EXPECT_EQ(CheckpointDir::latest_healthy(out.path), 10);
}

// Issue 13 #7: on a full disk begin() first removes dead writers' temps, then prunes what commit()
// would prune, and otherwise refuses before writing anything, saying what is needed.
TEST(CheckpointDir, ShortOfSpacePrunesFirstThenRefusesWithoutLeavingTemps) {
  TempDir out;
  CheckpointDir c(out.path, /*keep_last=*/2);
  save(c, 1, std::string(1000, 'a'));
  save(c, 2, std::string(1000, 'b'));
  const std::string stale = c.path_for(3) + ".tmp-" + std::to_string(dead_pid());
  fs::create_directories(stale);
  fs::write_file_atomic(fs::join(stale, "model.bin"), std::string(1000, 'c'));
  // "Free space" = 1000 bytes per missing checkpoint directory out of a 3000-byte disk.
  c.set_free_space_probe([&](const std::string&) -> std::uint64_t {
    const std::uint64_t used = 1000 * fs::list_dir(c.root()).size();
    return used >= 3000 ? 0 : 3000 - used;
  });
  const std::string tmp = c.begin(3, /*need_bytes=*/1000);
  EXPECT_FALSE(fs::exists(stale));  // the dead writer's temp went first
  EXPECT_EQ(CheckpointDir::complete_steps(out.path), (std::vector<std::int64_t>{1, 2}));  // enough room now
  c.abort(tmp);
  EXPECT_FALSE(fs::exists(tmp));
  // Needing two slots: step 1 (which commit() would prune anyway) goes before writing.
  const std::string tmp2 = c.begin(3, /*need_bytes=*/2000);
  EXPECT_EQ(CheckpointDir::complete_steps(out.path), (std::vector<std::int64_t>{2}));
  c.abort(tmp2);
  // More than the disk: refused, nothing written, nothing pruned that keep_last keeps.
  try {
    c.begin(3, /*need_bytes=*/1ULL << 40);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("not enough disk space"), std::string::npos) << m;
    EXPECT_NE(m.find("needs about 1024.00 GiB"), std::string::npos) << m;
  }
  EXPECT_EQ(fs::list_dir(c.root()), (std::vector<std::string>{"step-00000002"}));
}

TEST(CheckpointDir, Errors) {
  TempDir out;
  EXPECT_THROW(CheckpointDir(out.path, -1), Error);
  CheckpointDir c(out.path);
  EXPECT_THROW(c.begin(-1), Error);
  EXPECT_THROW(c.commit(fs::join(out.path, "nope"), 1), Error);
  const std::string elsewhere = fs::join(out.path, "elsewhere");
  fs::create_directories(elsewhere);
  EXPECT_THROW(c.commit(elsewhere, 1), Error);
}

// The fs helpers commit() relies on (prism/core/fs.h).
TEST(CheckpointFs, RenameExchangeAndFsyncTree) {
  TempDir out;
  const std::string a = fs::join(out.path, "a"), b = fs::join(out.path, "b");
  fs::create_directories(fs::join(a, "sub"));
  fs::create_directories(b);
  fs::write_file_atomic(fs::join(a, "sub/f"), "in a");
  fs::write_file_atomic(fs::join(b, "f"), "in b");
  EXPECT_NO_THROW(fs::fsync_tree(a));
  EXPECT_THROW(fs::fsync_file(fs::join(a, "missing")), Error);
  if (!fs::rename_exchange(a, b)) GTEST_SKIP() << "no RENAME_EXCHANGE here (commit uses its fallback)";
  EXPECT_EQ(fs::read_file(fs::join(b, "sub/f")), "in a");
  EXPECT_EQ(fs::read_file(fs::join(a, "f")), "in b");
  EXPECT_THROW(fs::rename_exchange(a, fs::join(out.path, "missing")), Error);
}

// The child side of RealCrashKeepsPreviousCheckpoint: skipped unless run by that test.
TEST(CheckpointDirCrashChild, WriteSlowlyUntilKilled) {
  const char* out = std::getenv(kChildEnv);
  if (!out || !*out) GTEST_SKIP() << "only run as the child of CheckpointDir.RealCrashKeepsPreviousCheckpoint";
  CheckpointDir c(out);
  const std::string tmp = c.begin(2);
  const std::string chunk(1 << 20, 'z');
  const std::string file = fs::join(tmp, "model.bin");
  for (int i = 0; i < 400; ++i) {  // 400 MiB at >= 20 ms per MiB: far longer than the parent waits
    fs::write_file_atomic(file + ".part" + std::to_string(i), chunk);
    if (i == 3) fs::write_file_atomic(fs::join(out, "child_started"), std::to_string(::getpid()));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  c.commit(tmp, 2);  // reaching this means the parent failed to kill us midway
}

TEST(CheckpointDir, RealCrashKeepsPreviousCheckpoint) {
  TempDir out;
  {
    CheckpointDir c(out.path, 1);
    save(c, 1, "step one");
  }
  const std::string filter = "--gtest_filter=CheckpointDirCrashChild.WriteSlowlyUntilKilled";
  std::vector<std::string> env_strings{std::string(kChildEnv) + "=" + out.path};
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  char* argv[] = {exe.data(), const_cast<char*>(filter.c_str()), nullptr};
  // The child's gtest output goes to a file, not into this test's output.
  const std::string child_log = fs::join(out.path, "child.log");
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addopen(&actions, 1, child_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t child = 0;
  const int rc = ::posix_spawn(&child, exe.c_str(), &actions, nullptr, argv, envp.data());
  ::posix_spawn_file_actions_destroy(&actions);
  ASSERT_EQ(rc, 0);

  // Wait until the child is midway through writing (4+ MiB written), then kill it hard.
  const std::string started = fs::join(out.path, "child_started");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(started) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(fs::exists(started)) << "child never started writing; its output:\n" << fs::read_file(child_log);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child exited on its own (" << status << "):\n"
                                                                  << fs::read_file(child_log);

  const std::string child_tmp = fs::join(out.path, "checkpoints/step-00000002.tmp-" + std::to_string(child));
  EXPECT_TRUE(fs::is_directory(child_tmp));  // the half-written checkpoint is there ...
  EXPECT_FALSE(fs::exists(fs::join(child_tmp, "COMPLETE")));
  const std::string one = fs::join(out.path, "checkpoints/step-00000001");
  EXPECT_EQ(CheckpointDir::latest_complete(out.path), one);  // ... and ignored
  EXPECT_EQ(fs::read_file(fs::join(one, "model.bin")), "step one");

  // A restarted writer commits the same step; the dead child's temp dir is cleaned up.
  CheckpointDir c(out.path, 1);
  save(c, 2, "step two");
  EXPECT_EQ(CheckpointDir::latest_complete(out.path), fs::join(out.path, "checkpoints/step-00000002"));
  EXPECT_FALSE(fs::exists(child_tmp));
  EXPECT_FALSE(fs::exists(one));  // keep_last 1
}

}  // namespace
}  // namespace prism::train
