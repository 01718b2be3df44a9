// Small POSIX file-system helpers used instead of std::filesystem.
//
// Why: the PyPI torch wheel's libtorch.so / libtorch_cpu.so export their own (older) copies of
// std::filesystem symbols (`nm -D libtorch_cpu.so | grep filesystem`: 140+). In any binary that
// links torch those interpose libstdc++'s and are ABI-incompatible with GCC 12's: e.g.
// std::filesystem::remove_all on a non-empty directory jumps to address 0. So no prism TU that
// ends up in a torch-linked binary calls std::filesystem; these helpers are plain POSIX.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace prism::fs {

bool exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
/// Size in bytes; throws prism::Error naming the file.
uint64_t file_size(const std::string& path);

/// `a/b` (no duplicate slash; b absolute -> b).
std::string join(const std::string& a, const std::string& b);
/// Last component ("model.safetensors" of "/x/model.safetensors"; trailing slashes ignored).
std::string filename(const std::string& path);
/// Everything before the last component ("." when there is none).
std::string parent(const std::string& path);
/// Absolute, lexically normalised path (no symlink resolution).
std::string absolute(const std::string& path);

/// Paths matching a glob(3) pattern, sorted. Empty when nothing matches, including when a
/// directory of the pattern does not exist; throws prism::Error naming the directory when one
/// exists but cannot be read. The one glob of prism: shard sources, tokenizer inputs, eval sets.
std::vector<std::string> glob(const std::string& pattern);
/// Why `pattern` matches nothing, for an error message: "directory 'out/x' does not exist" or
/// "no entry of directory 'out/x' matches '*.tok'".
std::string glob_miss_reason(const std::string& pattern);

/// Entry names (not paths) of a directory, sorted, without "." and "..".
std::vector<std::string> list_dir(const std::string& dir);
/// mkdir -p; throws on failure.
void create_directories(const std::string& dir);
/// rm -rf; missing paths are fine; throws on failure.
void remove_all(const std::string& path);
/// rename(2); throws naming both paths.
void rename(const std::string& from, const std::string& to);
/// Copies a regular file (overwrites), fsyncs it.
void copy_file(const std::string& from, const std::string& to);
/// cp -r of a directory tree.
void copy_tree(const std::string& from, const std::string& to);
/// A new unique directory under $TMPDIR (or /tmp): `<prefix>XXXXXX`.
std::string make_temp_dir(const std::string& prefix);
/// Writes `data` to `path` atomically: `<path>.tmp.<pid>`, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& data);
/// Whole file as bytes; throws naming the file.
std::string read_file(const std::string& path);
/// fsync of a directory (makes a rename durable).
void fsync_dir(const std::string& dir);
/// fsync of a regular file's data; throws naming the file.
void fsync_file(const std::string& path);
/// fsync of every regular file and directory under `dir`, children before parents, `dir` last:
/// after it returns, the whole tree survives a power loss (used before a checkpoint is committed).
void fsync_tree(const std::string& dir);
/// Atomically swaps two existing paths (renameat2 RENAME_EXCHANGE: either may be a non-empty
/// directory, which rename(2) cannot replace). Returns false when the file system does not support
/// it (the caller falls back to two renames); throws naming both paths on other errors.
bool rename_exchange(const std::string& a, const std::string& b);

}  // namespace prism::fs
