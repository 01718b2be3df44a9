// Tests for prism::fs::glob, the one glob helper (shard sources, tokenizer inputs, eval sets).
// Oracle: files created by the test, and the directory that is known to be missing.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "util/test_util.h"

namespace {

namespace fs = prism::fs;

class Glob : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = prism::test::make_temp_dir("glob"); }
  void TearDown() override {
    ::chmod(fs::join(dir_, "locked").c_str(), 0755);
    fs::remove_all(dir_);
  }
  void touch(const std::string& rel) {
    fs::create_directories(fs::parent(fs::join(dir_, rel)));
    fs::write_file_atomic(fs::join(dir_, rel), "x");
  }
  std::string dir_;
};

TEST_F(Glob, MatchesSortedAndEmptyWhenNothingMatches) {
  touch("a/b-2.tok");
  touch("a/b-10.tok");
  touch("a/c.txt");
  EXPECT_EQ(fs::glob(fs::join(dir_, "a/*.tok")),
            (std::vector<std::string>{fs::join(dir_, "a/b-10.tok"), fs::join(dir_, "a/b-2.tok")}));
  EXPECT_EQ(fs::glob(fs::join(dir_, "*/c.txt")), (std::vector<std::string>{fs::join(dir_, "a/c.txt")}));
  EXPECT_TRUE(fs::glob(fs::join(dir_, "a/*.bin")).empty());
  EXPECT_EQ(fs::glob_miss_reason(fs::join(dir_, "a/*.bin")),
            "no entry of directory '" + fs::join(dir_, "a") + "' matches '*.bin'");
}

TEST_F(Glob, AMissingDirectoryIsNoMatchAndTheReasonNamesIt) {
  const std::string pattern = fs::join(dir_, "out/demo/shards/*.tok");
  EXPECT_TRUE(fs::glob(pattern).empty());
  EXPECT_EQ(fs::glob_miss_reason(pattern), "directory '" + fs::join(dir_, "out") + "' does not exist");
  touch("file");
  EXPECT_EQ(fs::glob_miss_reason(fs::join(dir_, "file/*.tok")), "'" + fs::join(dir_, "file") + "' is not a directory");
}

TEST_F(Glob, AnUnreadableDirectoryIsAnErrorNamingIt) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every directory";
  touch("locked/x.tok");
  ::chmod(fs::join(dir_, "locked").c_str(), 0);
  try {
    fs::glob(fs::join(dir_, "locked/*.tok"));
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    EXPECT_EQ(std::string(e.what()), fs::join(dir_, "locked") + ": cannot read directory: Permission denied");
  }
}

}  // namespace
