// Tests for prism/io/safetensors.h: round trips of every dtype, zero-copy and copy-on-write
// mapping, misaligned files, every malformed-header rule (each must be a prism::Error naming the
// file and tensor, never a crash), HF sharding, atomic writes, and files written by the official
// Python package (tests/fixtures/safetensors_fixtures.py) as the external oracle.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "prism/core/error.h"
#include "prism/io/safetensors.h"
#include "util/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace prism::io;

namespace {

// Recursive delete without std::filesystem::remove_all: the torch wheel's libtorch.so exports
// its own copy of remove_all, built against a newer libstdc++, which calls a weak symbol
// (recursive_directory_iterator::__erase) that g++ 12's libstdc++ lacks -> jump to address 0.
void remove_tree(const fs::path& p) {
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(p, ec))) {
    std::vector<fs::path> children;
    for (const auto& e : fs::directory_iterator(p, ec)) children.push_back(e.path());
    for (const auto& c : children) remove_tree(c);
  }
  fs::remove(p, ec);
}

// A scratch directory removed when the test ends.
struct TmpDir {
  std::string path = prism::test::make_temp_dir("safetensors");
  TmpDir() = default;
  TmpDir(const TmpDir&) = delete;
  ~TmpDir() { remove_tree(path); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A safetensors file from a literal header and buffer (no padding, no validation).
std::string raw_file(const std::string& header, const std::string& buffer) {
  return le64(header.size()) + header + buffer;
}

// The message of the prism::Error `fn` throws; a crash-free non-Error exception fails the test.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const prism::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected prism::Error, got another exception: " << e.what();
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Byte-exact comparison: dtype, shape and memory (NaN payloads, -0 and fp8 bits included).
::testing::AssertionResult same_bytes(const at::Tensor& actual, const at::Tensor& expected) {
  if (actual.scalar_type() != expected.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << actual.scalar_type() << " != " << expected.scalar_type();
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " != " << expected.sizes();
  auto a = actual.contiguous(), e = expected.contiguous();
  if (std::memcmp(a.data_ptr(), e.data_ptr(), a.nbytes()) != 0) return ::testing::AssertionFailure() << "bytes differ";
  return ::testing::AssertionSuccess();
}

// One tensor per supported dtype, with distinct deterministic values.
NamedTensors every_dtype() {
  const std::vector<c10::ScalarType> types = {
      at::kBool,          at::kByte,          at::kChar,         at::kShort,         at::kUInt16,
      at::kHalf,          at::kBFloat16,      at::kInt,          at::kUInt32,        at::kFloat,
      at::kDouble,        at::kLong,          at::kUInt64,       at::kFloat8_e4m3fn, at::kFloat8_e5m2,
      at::kFloat8_e4m3fnuz, at::kFloat8_e5m2fnuz, at::kFloat8_e8m0fnu, at::kComplexFloat};
  NamedTensors out;
  for (auto t : types) {
    auto base = at::arange(1, 7, at::kDouble).reshape({2, 3}) * 0.5;  // exactly representable
    at::Tensor v;
    if (t == at::kBool)
      v = at::arange(6).reshape({2, 3}).remainder(2).eq(0);
    else if (t == at::kFloat8_e8m0fnu)  // powers of two only
      v = at::pow(2.0, at::arange(-3, 3, at::kDouble)).reshape({2, 3}).to(t);
    else if (t == at::kComplexFloat)
      v = at::complex(base.to(at::kFloat), -base.to(at::kFloat));
    else if (at::isIntegralType(t, /*includeBool=*/false))
      v = at::arange(1, 7, at::kLong).reshape({2, 3}).to(t);
    else
      v = base.to(t);
    out.emplace_back(std::string("t_") + c10::toString(t), v);
  }
  out.emplace_back("scalar", at::scalar_tensor(2.5, at::kFloat));                // 0-rank
  out.emplace_back("scalar_bf16", at::scalar_tensor(-1.5, at::kBFloat16));       // 0-rank, 2 bytes
  out.emplace_back("empty", at::empty({0, 5}, at::kFloat));                      // zero-size
  out.emplace_back("empty_i64", at::empty({3, 0}, at::kLong));                   // zero-size
  return out;
}

uint64_t header_length(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
  return n;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// dtype table

TEST(SafetensorsDtype, MappingIsABijection) {
  const std::vector<std::pair<std::string, c10::ScalarType>> pairs = {
      {"BOOL", at::kBool},       {"U8", at::kByte},         {"I8", at::kChar},
      {"I16", at::kShort},       {"U16", at::kUInt16},      {"F16", at::kHalf},
      {"BF16", at::kBFloat16},   {"I32", at::kInt},         {"U32", at::kUInt32},
      {"F32", at::kFloat},       {"F64", at::kDouble},      {"I64", at::kLong},
      {"U64", at::kUInt64},      {"F8_E4M3", at::kFloat8_e4m3fn}, {"F8_E5M2", at::kFloat8_e5m2},
      {"C64", at::kComplexFloat}};
  for (const auto& [name, type] : pairs) {
    EXPECT_EQ(safetensors_to_scalar_type(name), type) << name;
    EXPECT_EQ(scalar_type_to_safetensors(type), name) << name;
    EXPECT_EQ(safetensors_dtype_size(name), c10::elementSize(type)) << name;
  }
  EXPECT_TRUE(contains(error_of([] { safetensors_dtype_size("F128"); }), "F128"));
  EXPECT_TRUE(contains(error_of([] { safetensors_to_scalar_type("F4"); }), "F4"));
  EXPECT_TRUE(contains(error_of([] { scalar_type_to_safetensors(at::kComplexDouble); }), "ComplexDouble"));
}

// ------------------------------------------------------------------------------------------------
// Round trips and the mapping

TEST(Safetensors, RoundTripEveryDtype) {
  TmpDir dir;
  const auto tensors = every_dtype();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "héllo \"quoted\"\n"}};
  save_safetensors(dir / "a.safetensors", tensors, meta);
  auto f = SafetensorsFile::open(dir / "a.safetensors");
  EXPECT_EQ(f->header().metadata, meta);
  EXPECT_EQ(f->names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f->contains(name)) << name;
    auto got = f->get(name);
    EXPECT_TRUE(same_bytes(got, t)) << name;
    EXPECT_EQ(got.device(), at::Device(at::kCPU));
    EXPECT_EQ(f->info(name).dtype, scalar_type_to_safetensors(t.scalar_type())) << name;
  }
  EXPECT_EQ(f->get("scalar").dim(), 0);
  EXPECT_EQ(f->get("scalar").item<float>(), 2.5f);
  EXPECT_EQ(f->get("empty").sizes(), at::IntArrayRef({0, 5}));
  EXPECT_EQ(f->get("empty_i64").sizes(), at::IntArrayRef({3, 0}));
}

TEST(Safetensors, WriterLayoutFollowsTheOfficialWriter) {
  TmpDir dir;
  save_safetensors(dir / "a.safetensors",
                   {{"b", at::ones({3}, at::kHalf)}, {"a", at::ones({1}, at::kDouble)}, {"c", at::ones({2}, at::kBool)},
                    {"d", at::ones({1}, at::kDouble)}, {"e", at::ones({5}, at::kFloat)}});
  const std::string bytes = read_bytes(dir / "a.safetensors");
  const uint64_t n = header_length(bytes);
  EXPECT_EQ((8 + n) % 8, 0u) << "header padded to 8 bytes";
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find("__metadata__"), std::string::npos) << "no metadata block when none is given";
  // Descending dtype, then name: a, d (F64), e (F32), b (F16), c (BOOL).
  EXPECT_EQ(header.rfind(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"d":)", 0), 0u) << header;
  auto f = SafetensorsFile::open(dir / "a.safetensors");
  std::vector<std::string> order;
  for (const auto& t : f->header().tensors) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"a", "d", "e", "b", "c"}));
  for (const auto& t : f->header().tensors)
    EXPECT_EQ((f->header().data_offset() + t.begin) % safetensors_dtype_size(t.dtype), 0u) << t.name;
}

TEST(Safetensors, WriterAcceptsViewsAndConjugates) {
  TmpDir dir;
  auto base = at::arange(12, at::kFloat).reshape({3, 4});
  auto z = at::complex(at::arange(3, at::kFloat), at::ones({3}, at::kFloat));
  save_safetensors(dir / "v.safetensors", {{"t", base.t()}, {"s", base.slice(1, 1, 3)}, {"conj", z.conj()},
                                           {"neg", at::imag(z.conj())}});
  auto f = SafetensorsFile::open(dir / "v.safetensors");
  EXPECT_TRUE(at::equal(f->get("t"), base.t().contiguous()));
  EXPECT_TRUE(at::equal(f->get("s"), base.slice(1, 1, 3).contiguous()));
  EXPECT_TRUE(at::equal(f->get("conj"), z.conj().resolve_conj()));
  EXPECT_TRUE(at::equal(f->get("neg"), -at::ones({3}, at::kFloat)));
}

TEST(Safetensors, ZeroCopyViewsAreCopyOnWrite) {
  TmpDir dir;
  const auto path = dir / "w.safetensors";
  auto w = at::arange(16, at::kFloat).reshape({4, 4});
  save_safetensors(path, {{"w", w}, {"b", at::ones({4}, at::kBFloat16)}});
  const std::string on_disk = read_bytes(path);

  auto f = SafetensorsFile::open(path);
  auto a = f->get("w");
  auto b = f->get("w");
  // Both are views of the same mapped bytes, not copies.
  EXPECT_EQ(a.data_ptr(), b.data_ptr());
  const auto& info = f->info("w");
  EXPECT_EQ(info.end - info.begin, static_cast<uint64_t>(a.nbytes()));
  // In-place ops work (PROT_WRITE) and are visible through the shared private mapping ...
  a.add_(100.0);
  EXPECT_TRUE(at::equal(b, w + 100.0));
  // ... but never reach the file (MAP_PRIVATE) nor another open of it.
  EXPECT_EQ(read_bytes(path), on_disk);
  EXPECT_TRUE(at::equal(SafetensorsFile::open(path)->get("w"), w));
}

TEST(Safetensors, ViewsKeepTheFileMapped) {
  TmpDir dir;
  const auto path = dir / "k.safetensors";
  auto w = at::arange(1000, at::kDouble);
  save_safetensors(path, {{"w", w}});
  at::Tensor view;
  {
    auto f = SafetensorsFile::open(path);
    view = f->get("w");
  }  // the SafetensorsFile is gone; the tensor's deleter still owns the mapping
  fs::remove(path);
  EXPECT_TRUE(at::equal(view, w));
  // Overwriting a file that is mapped replaces it by rename, so old views keep the old bytes.
  save_safetensors(path, {{"w", w}});
  auto f = SafetensorsFile::open(path);
  auto old_view = f->get("w");
  save_safetensors(path, {{"w", w * 2}});
  EXPECT_TRUE(at::equal(old_view, w));
  EXPECT_TRUE(at::equal(SafetensorsFile::open(path)->get("w"), w * 2));
}

TEST(Safetensors, MisalignedDataIsCopied) {
  TmpDir dir;
  // The header is padded so that the buffer starts at file offset 8k+2: after one byte, F32 [2]
  // lands at 8k+3, F64 [] at 8k+11 and BF16 [3] at 8k+19, none aligned to its element size.
  const float f32[2] = {1.5f, -2.25f};
  const double f64 = 3.125;
  const uint16_t bf16[3] = {0x3f80, 0xc000, 0x4040};  // 1, -2, 3
  std::string buffer(1, '\x07');
  buffer.append(reinterpret_cast<const char*>(f32), 8);
  buffer.append(reinterpret_cast<const char*>(&f64), 8);
  buffer.append(reinterpret_cast<const char*>(bf16), 6);
  std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},)"
                       R"("d":{"dtype":"F64","shape":[],"data_offsets":[9,17]},)"
                       R"("h":{"dtype":"BF16","shape":[3],"data_offsets":[17,23]}})";
  while ((8 + header.size()) % 8 != 2) header += ' ';  // right-padding with spaces is allowed
  write_bytes(dir / "m.safetensors", raw_file(header, buffer));

  auto f = SafetensorsFile::open(dir / "m.safetensors");
  auto tf = f->get("f");
  auto td = f->get("d");
  auto th = f->get("h");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tf.data_ptr()) % 4, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(td.data_ptr()) % 8, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(th.data_ptr()) % 2, 0u);
  EXPECT_TRUE(at::equal(tf, at::tensor({1.5f, -2.25f})));
  EXPECT_EQ(td.dim(), 0);
  EXPECT_EQ(td.item<double>(), 3.125);
  EXPECT_TRUE(at::equal(th.to(at::kFloat), at::tensor({1.0f, -2.0f, 3.0f})));
  EXPECT_EQ(f->get("u").item<uint8_t>(), 7);
  // A copy is independent of the mapping: writing to it does not show in the next get().
  tf.zero_();
  EXPECT_TRUE(at::equal(f->get("f"), at::tensor({1.5f, -2.25f})));
}

// ------------------------------------------------------------------------------------------------
// Malformed files: every rule gives a prism::Error naming the file (and tensor), never a crash.

struct BadCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> must_contain;  // besides the file name
};

std::vector<BadCase> bad_cases() {
  const std::string f32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string buf8(8, '\0');
  auto entry = [](const std::string& body) { return R"({"x.weight":)" + body + "}"; };
  std::string deep = R"({"x":)" + std::string(5000, '[') + std::string(5000, ']') + "}";
  return {
      {"empty file", "", {"file too small", "found 0 bytes"}},
      {"short file", std::string("\x02\0\0\0\0", 5), {"file too small", "found 5 bytes"}},
      {"header past the end", le64(1000) + "{}", {"header length past the end", "expected <= 2, found 1000"}},
      {"header over 100 MB", le64(200'000'000) + "{}", {"header length too large"}},
      {"empty header", le64(0), {"does not start with '{'"}},
      {"leading space", raw_file(" {}", ""), {"does not start with '{'"}},
      {"array header", raw_file("[]", ""), {"does not start with '{'"}},
      {"bad JSON", raw_file("{\"x\":", ""), {"invalid JSON"}},
      {"trailing garbage", raw_file("{}  x", ""), {"invalid JSON"}},
      {"invalid UTF-8", raw_file("{\"\xff\":1}", ""), {"invalid JSON"}},
      {"too deep", raw_file(deep, ""), {"nested too deeply"}},
      {"entry not an object", raw_file(entry("5"), ""), {"tensor 'x.weight'", "not a JSON object"}},
      {"no dtype", raw_file(entry(R"({"shape":[2],"data_offsets":[0,8]})"), buf8), {"tensor 'x.weight'", "no \"dtype\""}},
      {"dtype not a string", raw_file(entry(R"({"dtype":5,"shape":[2],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "\"dtype\" is not a string"}},
      {"unknown dtype", raw_file(entry(R"({"dtype":"F128","shape":[2],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "unknown or unsupported dtype", "found \"F128\""}},
      {"sub-byte dtype", raw_file(entry(R"({"dtype":"F4","shape":[2],"data_offsets":[0,1]})"), std::string(1, '\0')),
       {"tensor 'x.weight'", "found \"F4\""}},
      {"no shape", raw_file(entry(R"({"dtype":"F32","data_offsets":[0,8]})"), buf8), {"tensor 'x.weight'", "no \"shape\""}},
      {"shape not an array", raw_file(entry(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "\"shape\" is not an array"}},
      {"negative dim", raw_file(entry(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "non-negative integers", "found -2"}},
      {"fractional dim", raw_file(entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "non-negative integers"}},
      {"huge dim", raw_file(entry(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "non-negative integers"}},
      {"numel overflow", raw_file(entry(R"({"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "shape overflows"}},
      {"bytes overflow", raw_file(entry(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "shape overflows"}},
      {"no data_offsets", raw_file(entry(R"({"dtype":"F32","shape":[2]})"), buf8),
       {"tensor 'x.weight'", "no \"data_offsets\""}},
      {"one offset", raw_file(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), buf8),
       {"tensor 'x.weight'", "[begin, end]"}},
      {"negative offset", raw_file(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), buf8),
       {"tensor 'x.weight'", "[begin, end]"}},
      {"begin > end", raw_file(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), buf8),
       {"tensor 'x.weight'", "begin > end"}},
      {"end out of range", raw_file(entry(R"({"dtype":"F32","shape":[512],"data_offsets":[0,2048]})"), std::string(1024, 'a')),
       {"tensor 'x.weight': data_offsets out of range (expected end <= 1024, found 2048)"}},
      {"span mismatch", raw_file(entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), buf8),
       {"tensor 'x.weight'", "byte span does not match", "expected 12 bytes, found 8 bytes"}},
      {"overlap", raw_file(R"({"a":)" + f32x2 + R"(,"x.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           std::string(12, '\0')),
       {"tensor 'x.weight'", "overlaps tensor 'a'"}},
      {"hole", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x.weight":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        std::string(12, '\0')),
       {"tensor 'x.weight'", "hole", "expected begin == 4, found begin 8"}},
      {"hole at start", raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), buf8),
       {"tensor 'x.weight'", "hole"}},
      {"trailing bytes", raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), buf8),
       {"not fully covered", "expected 8 bytes used, found 4 bytes used"}},
      {"bytes without tensors", raw_file("{}", buf8), {"not fully covered"}},
      {"duplicate tensor", raw_file(R"({"x.weight":)" + f32x2 + R"(,"x.weight":)" + f32x2 + "}", buf8),
       {"tensor 'x.weight'", "duplicate tensor name"}},
      {"duplicate field", raw_file(entry(R"({"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})"), buf8),
       {"dtype: duplicate key"}},
      {"metadata not an object", raw_file(R"({"__metadata__":[1]})", ""), {"__metadata__", "string->string"}},
      {"metadata value not a string", raw_file(R"({"__metadata__":{"step":5}})", ""),
       {"__metadata__.step", "must be strings", "found 5"}},
  };
}

TEST(SafetensorsBadFiles, EveryRuleGivesANamedError) {
  TmpDir dir;
  int i = 0;
  for (const auto& c : bad_cases()) {
    SCOPED_TRACE(c.what);
    const std::string name = "model-0000" + std::to_string(i++ % 10) + "-bad.safetensors";
    write_bytes(dir / name, c.bytes);
    const std::string msg = error_of([&] { SafetensorsFile::open(dir / name); });
    EXPECT_TRUE(contains(msg, name + ": ")) << msg;
    for (const auto& part : c.must_contain) EXPECT_TRUE(contains(msg, part)) << "missing '" << part << "' in: " << msg;
    // The torch-free parser gives the same error on the same bytes.
    const std::string direct = error_of([&] {
      parse_safetensors_header(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size(), dir / name);
    });
    EXPECT_EQ(direct, msg);
  }
}

TEST(SafetensorsBadFiles, AcceptedEdgeCases) {
  TmpDir dir;
  // Empty header, padded header, zero-size tensors at the end, unknown entry fields (ignored, as
  // the reference does), empty metadata.
  write_bytes(dir / "a.safetensors", raw_file("{}", ""));
  EXPECT_TRUE(SafetensorsFile::open(dir / "a.safetensors")->names().empty());
  write_bytes(dir / "b.safetensors",
              raw_file(R"({"__metadata__":{},"e":{"dtype":"I64","shape":[0,3],"data_offsets":[4,4],"extra":[1,{"k":2}]},)"
                       R"("s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})"
                       "   \n\t ",
                       std::string("\0\0\x80\x3f", 4)));
  auto f = SafetensorsFile::open(dir / "b.safetensors");
  EXPECT_EQ(f->get("s").item<float>(), 1.0f);
  EXPECT_EQ(f->get("e").sizes(), at::IntArrayRef({0, 3}));
  EXPECT_TRUE(f->header().metadata.empty());
  EXPECT_TRUE(contains(error_of([&] { f->get("nope"); }), "b.safetensors: tensor 'nope'"));
  EXPECT_TRUE(contains(error_of([&] { SafetensorsFile::open(dir / "missing.safetensors"); }), "missing.safetensors"));
  EXPECT_TRUE(contains(error_of([&] { SafetensorsFile::open(dir.path); }), "not a regular file"));
}

TEST(SafetensorsBadFiles, CorruptedAndTruncatedFilesNeverCrash) {
  TmpDir dir;
  save_safetensors(dir / "ok.safetensors", every_dtype(), {{"format", "pt"}});
  const std::string good = read_bytes(dir / "ok.safetensors");
  const size_t header_end = 8 + header_length(good);
  std::mt19937 rng(1234);
  auto check = [&](const std::string& bytes) {
    write_bytes(dir / "c.safetensors", bytes);
    try {
      auto f = SafetensorsFile::open(dir / "c.safetensors");
      for (const auto& n : f->names()) (void)f->get(n).clone();  // touch every byte of every view
    } catch (const prism::Error&) {
      // expected for most corruptions
    }
  };
  for (size_t len = 0; len < good.size(); len += (len < header_end + 16 ? 1 : 7)) check(good.substr(0, len));
  for (int i = 0; i < 400; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % header_end] = static_cast<char>(rng());
    check(bytes);
  }
}

// ------------------------------------------------------------------------------------------------
// Writer errors and atomicity

TEST(SafetensorsWrite, BadInputsAreNamedErrors) {
  TmpDir dir;
  const auto path = dir / "w.safetensors";
  auto msg = error_of([&] { save_safetensors(path, {{"a", at::ones({2})}, {"a", at::ones({2})}}); });
  EXPECT_TRUE(contains(msg, "w.safetensors: tensor 'a': duplicate tensor name")) << msg;
  msg = error_of([&] { save_safetensors(path, {{"z", at::ones({2}, at::kComplexDouble)}}); });
  EXPECT_TRUE(contains(msg, "tensor 'z'") && contains(msg, "ComplexDouble")) << msg;
  msg = error_of([&] { save_safetensors(path, {{"u", at::Tensor()}}); });
  EXPECT_TRUE(contains(msg, "tensor 'u'")) << msg;
  msg = error_of([&] { save_safetensors(path, {{"__metadata__", at::ones({1})}}); });
  EXPECT_TRUE(contains(msg, "reserved")) << msg;
  msg = error_of([&] { save_safetensors(dir / "no/such/dir/x.safetensors", {{"a", at::ones({1})}}); });
  EXPECT_TRUE(contains(msg, "x.safetensors")) << msg;
  EXPECT_FALSE(fs::exists(path)) << "a failed save leaves nothing behind";
}

TEST(SafetensorsWrite, CudaTensorsAreCopiedToCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  TmpDir dir;
  auto w = at::arange(24, at::kFloat).reshape({4, 6});
  save_safetensors(dir / "g.safetensors", {{"w", w.to(at::kCUDA).t()}, {"h", w.to(at::kCUDA, at::kBFloat16)}});
  auto f = SafetensorsFile::open(dir / "g.safetensors");
  EXPECT_TRUE(at::equal(f->get("w"), w.t().contiguous()));
  EXPECT_TRUE(same_bytes(f->get("h"), w.to(at::kBFloat16)));
}

TEST(SafetensorsWrite, NoTemporaryFilesRemain) {
  TmpDir dir;
  save_safetensors(dir / "a.safetensors", every_dtype());
  save_safetensors(dir / "a.safetensors", every_dtype());  // overwrite
  (void)error_of([&] { save_safetensors(dir / "b.safetensors", {{"z", at::ones({1}, at::kComplexDouble)}}); });
  fs::create_directories(dir / "sharded");
  save_sharded(dir / "sharded", every_dtype(), {.max_shard_bytes = 64});
  for (const auto& e : fs::recursive_directory_iterator(dir.path))
    EXPECT_FALSE(contains(e.path().filename().string(), ".tmp")) << e.path();
  EXPECT_FALSE(fs::exists(dir / "b.safetensors"));
}

// The streamed writers: headers from declared specs, each tensor produced once when its bytes are
// due; the files equal the in-memory writers' byte for byte.
TEST(SafetensorsWrite, StreamedEqualsInMemoryAndAsksForEachTensorOnce) {
  TmpDir dir;
  const auto tensors = every_dtype();
  std::vector<TensorSpec> specs;
  for (const auto& [n, t] : tensors) specs.push_back({n, t.scalar_type(), t.sizes().vec()});
  std::vector<int> calls(tensors.size(), 0);
  auto source = [&](size_t i) {
    ++calls[i];
    return tensors[i].second;
  };
  save_safetensors(dir / "mem.safetensors", tensors, {{"k", "v"}});
  save_safetensors(dir / "stream.safetensors", specs, source, {{"k", "v"}});
  EXPECT_EQ(read_bytes(dir / "mem.safetensors"), read_bytes(dir / "stream.safetensors"));
  for (size_t i = 0; i < calls.size(); ++i) EXPECT_EQ(calls[i], 1) << tensors[i].first;

  // An explicit shard assignment (a merge keeps its reference's layout): shard 1 first in the list.
  fs::create_directories(dir / "sharded");
  ShardOptions so;
  so.shard_of.assign(specs.size(), 0);
  so.shard_of[0] = 1;
  so.shard_of[3] = 1;
  const auto written = save_sharded(dir / "sharded", specs, source, so);
  ASSERT_EQ(written.size(), 3u);
  auto index = json::parse(read_bytes(dir / "sharded/model.safetensors.index.json"));
  for (size_t i = 0; i < specs.size(); ++i)
    EXPECT_EQ(index["weight_map"][specs[i].name], so.shard_of[i] == 1 ? written[1] : written[0]) << specs[i].name;
  CheckpointReader r(dir / "sharded");
  for (const auto& [n, t] : tensors) EXPECT_TRUE(same_bytes(r.get(n), t)) << n;

  // A produced tensor that is not what its spec declared is refused, naming it; nothing is left.
  auto bad = [&](size_t i) { return i == 2 ? at::zeros({1}, specs[2].dtype) : tensors[i].second; };
  auto msg = error_of([&] { save_safetensors(dir / "bad.safetensors", specs, bad); });
  EXPECT_TRUE(contains(msg, "tensor '" + specs[2].name + "'") && contains(msg, "declared")) << msg;
  EXPECT_FALSE(fs::exists(dir / "bad.safetensors"));
  so.shard_of.assign(specs.size(), 2);  // shards 0 and 1 would be empty
  msg = error_of([&] { save_sharded(dir / "sharded", specs, source, so); });
  EXPECT_TRUE(contains(msg, "empty")) << msg;
}

// ------------------------------------------------------------------------------------------------
// Sharded checkpoints

NamedTensors shard_inputs() {
  NamedTensors t;
  for (int i = 0; i < 9; ++i)
    t.emplace_back("layers." + std::to_string(i) + ".w", at::arange(10 * (i + 1), at::kFloat) * (i + 1));
  t.emplace_back("big", at::arange(300, at::kDouble));  // 2400 bytes: larger than the shard limit
  t.emplace_back("tail.bf16", at::ones({7}, at::kBFloat16));
  return t;
}

TEST(SafetensorsSharded, SmallShardsRoundTripThroughTheIndex) {
  TmpDir dir;
  const auto tensors = shard_inputs();
  ShardOptions opt;
  opt.max_shard_bytes = 500;
  const auto written = save_sharded(dir.path, tensors, opt);
  ASSERT_GE(written.size(), 3u);  // >= 2 shards + the index
  EXPECT_EQ(written.back(), "model.safetensors.index.json");
  const size_t num_shards = written.size() - 1;
  for (size_t s = 0; s < num_shards; ++s) {
    auto pad5 = [](size_t v) { return std::string(5 - std::to_string(v).size(), '0') + std::to_string(v); };
    EXPECT_EQ(written[s], "model-" + pad5(s + 1) + "-of-" + pad5(num_shards) + ".safetensors");
  }
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));

  const json index = json::parse(read_bytes(dir / "model.safetensors.index.json"));
  uint64_t total = 0;
  for (const auto& [n, t] : tensors) total += t.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  ASSERT_EQ(index["weight_map"].size(), tensors.size());

  // Order is kept, nothing is split, every shard is within the limit unless it is one oversized
  // tensor, and "big" sits alone.
  size_t last_shard = 0;
  std::map<std::string, uint64_t> shard_bytes;
  std::map<std::string, int> shard_count;
  for (const auto& [n, t] : tensors) {
    const std::string file = index["weight_map"][n];
    const size_t k = std::find(written.begin(), written.end(), file) - written.begin();
    EXPECT_GE(k, last_shard) << n;
    last_shard = k;
    shard_bytes[file] += t.nbytes();
    shard_count[file] += 1;
  }
  for (const auto& [file, bytes] : shard_bytes) EXPECT_TRUE(bytes <= 500 || shard_count[file] == 1) << file;
  EXPECT_EQ(shard_count[index["weight_map"]["big"].get<std::string>()], 1);

  CheckpointReader reader(dir.path);
  EXPECT_EQ(reader.files().size(), num_shards);
  EXPECT_EQ(reader.index_metadata().at("total_size"), std::to_string(total));
  std::vector<std::string> names;
  for (const auto& [n, t] : tensors) {
    names.push_back(n);
    ASSERT_TRUE(reader.contains(n)) << n;
    EXPECT_TRUE(same_bytes(reader.get(n), t)) << n;
    EXPECT_EQ(fs::path(reader.file_of(n)).filename().string(), index["weight_map"][n].get<std::string>());
    EXPECT_EQ(reader.info(n).shape, t.sizes().vec());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(reader.names(), names);
  // The index file itself is also accepted as the checkpoint path.
  EXPECT_EQ(CheckpointReader(dir / "model.safetensors.index.json").names(), names);
  // Every shard carries the metadata.
  EXPECT_EQ(SafetensorsFile::open(reader.files()[0])->header().metadata.at("format"), "pt");
}

TEST(SafetensorsSharded, OneFileWhenEverythingFitsAndStaleFilesGo) {
  TmpDir dir;
  const auto tensors = shard_inputs();
  save_sharded(dir.path, tensors, {.max_shard_bytes = 500});
  write_bytes(dir / "tokenizer.json", "{}");
  const auto written = save_sharded(dir.path, tensors);  // default 5 GB: one file
  EXPECT_EQ(written, std::vector<std::string>{"model.safetensors"});
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.path)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"model.safetensors", "tokenizer.json"}));
  CheckpointReader reader(dir.path);
  EXPECT_EQ(reader.files(), std::vector<std::string>{(fs::path(dir.path) / "model.safetensors").string()});
  for (const auto& [n, t] : tensors) EXPECT_TRUE(same_bytes(reader.get(n), t)) << n;
  // And back to shards: the single file is removed, so it cannot shadow the index.
  save_sharded(dir.path, tensors, {.max_shard_bytes = 500});
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_GT(CheckpointReader(dir.path).files().size(), 1u);
}

TEST(SafetensorsSharded, EmptyAndOversizedOnly) {
  TmpDir dir;
  EXPECT_EQ(save_sharded(dir.path, {}), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(CheckpointReader(dir.path).names().empty());
  const auto w = save_sharded(dir.path, {{"a", at::ones({100})}, {"b", at::ones({100})}}, {.max_shard_bytes = 10});
  EXPECT_EQ(w, (std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                         "model.safetensors.index.json"}));
  EXPECT_TRUE(contains(error_of([&] { save_sharded(dir / "nope", {}); }), "nope: output directory does not exist"));
}

struct ShardedDir {
  TmpDir dir;
  std::vector<std::string> written;
  ShardedDir() { written = save_sharded(dir.path, shard_inputs(), {.max_shard_bytes = 500}); }
  json index() const { return json::parse(read_bytes(dir / "model.safetensors.index.json")); }
  void set_index(const json& j) const { write_bytes(dir / "model.safetensors.index.json", j.dump(2)); }
};

TEST(SafetensorsSharded, MissingShardIsNamed) {
  ShardedDir s;
  fs::remove(s.dir / s.written[1]);
  const auto msg = error_of([&] { CheckpointReader r(s.dir.path); });
  EXPECT_TRUE(contains(msg, s.written[1] + ": shard listed in model.safetensors.index.json is missing")) << msg;
}

TEST(SafetensorsSharded, TensorMissingFromItsShardIsNamed) {
  ShardedDir s;
  auto j = s.index();
  j["weight_map"]["ghost.weight"] = s.written[0];
  s.set_index(j);
  const auto msg = error_of([&] { CheckpointReader r(s.dir.path); });
  EXPECT_TRUE(contains(msg, s.written[0] + ": tensor 'ghost.weight': tensor listed in model.safetensors.index.json "
                                           "is not in its shard"))
      << msg;
  // A tensor listed under the wrong shard: also not in (that) shard.
  j = s.index();
  j["weight_map"]["big"] = s.written[0];
  s.set_index(j);
  EXPECT_TRUE(contains(error_of([&] { CheckpointReader r(s.dir.path); }), "tensor 'big'"));
}

TEST(SafetensorsSharded, TensorInTwoShardsIsNamed) {
  ShardedDir s;
  // Rewrite the second shard so that it also holds the first shard's first tensor.
  CheckpointReader before(s.dir.path);
  const std::string dup = "layers.0.w";
  NamedTensors second;
  auto shard2 = SafetensorsFile::open(s.dir / s.written[1]);
  for (const auto& n : shard2->names()) second.emplace_back(n, shard2->get(n).clone());
  second.emplace_back(dup, before.get(dup).clone());
  save_safetensors(s.dir / s.written[1], second);
  const auto msg = error_of([&] { CheckpointReader r(s.dir.path); });
  EXPECT_TRUE(contains(msg, "tensor '" + dup + "': tensor appears in two shards")) << msg;
  EXPECT_TRUE(contains(msg, s.written[0]) && contains(msg, s.written[1])) << msg;
}

TEST(SafetensorsSharded, BadIndexesAreNamed) {
  ShardedDir s;
  const auto idx = "model.safetensors.index.json";
  write_bytes(s.dir / idx, "{\"weight_map\": ");
  EXPECT_TRUE(contains(error_of([&] { CheckpointReader r(s.dir.path); }), std::string(idx) + ": invalid JSON"));
  s.set_index(json{{"metadata", json::object()}});
  EXPECT_TRUE(contains(error_of([&] { CheckpointReader r(s.dir.path); }), "weight_map"));
  s.set_index(json{{"weight_map", {{"a", 5}}}});
  EXPECT_TRUE(contains(error_of([&] { CheckpointReader r(s.dir.path); }), "tensor 'a'"));
  s.set_index(json{{"weight_map", {{"a", "../outside.safetensors"}}}});
  EXPECT_TRUE(contains(error_of([&] { CheckpointReader r(s.dir.path); }), "relative path inside"));
  write_bytes(s.dir / idx, R"({"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}})");
  EXPECT_TRUE(contains(error_of([&] { CheckpointReader r(s.dir.path); }), "duplicate"));
}

TEST(CheckpointReaderTest, SingleFilesDirectoriesAndMissingNames) {
  TmpDir dir;
  save_safetensors(dir / "x.safetensors", {{"a", at::ones({2})}});
  CheckpointReader by_file(dir / "x.safetensors");
  EXPECT_EQ(by_file.names(), std::vector<std::string>{"a"});
  EXPECT_EQ(by_file.file_of("a"), dir / "x.safetensors");
  auto msg = error_of([&] { by_file.get("b"); });
  EXPECT_TRUE(contains(msg, "x.safetensors: tensor 'b'")) << msg;
  msg = error_of([&] { CheckpointReader r(dir.path); });
  EXPECT_TRUE(contains(msg, "neither model.safetensors nor model.safetensors.index.json")) << msg;
  msg = error_of([&] { CheckpointReader r(dir / "nowhere"); });
  EXPECT_TRUE(contains(msg, "nowhere: checkpoint not found")) << msg;
  fs::rename(dir / "x.safetensors", dir / "model.safetensors");
  EXPECT_TRUE(at::equal(CheckpointReader(dir.path).get("a"), at::ones({2})));
}

// ------------------------------------------------------------------------------------------------
// The official Python writer as the oracle (tests/fixtures/safetensors_fixtures.py)

namespace {

double json_number(const json& v) {
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    if (s == "nan") return std::nan("");
    return s == "inf" ? INFINITY : -INFINITY;
  }
  return v.get<double>();
}

std::string to_hex(const at::Tensor& t) {
  static const char* digits = "0123456789abcdef";
  auto c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  std::string s;
  for (size_t i = 0; i < c.nbytes(); ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

// Every value of `t` against expected.json, through a path that does not reuse raw bytes: the
// dtype must be interpreted as torch interprets it (fp8 flavours, unsigned, complex).
void expect_values(const std::string& name, const at::Tensor& t, const json& values) {
  auto flat = t.reshape(-1);
  ASSERT_EQ(static_cast<size_t>(flat.numel()), values.size()) << name;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const json& e = values[i];
    switch (t.scalar_type()) {
      case at::kUInt64:
        EXPECT_EQ(static_cast<const uint64_t*>(flat.data_ptr())[i], e.get<uint64_t>()) << name << "[" << i << "]";
        break;
      case at::kLong:
        EXPECT_EQ(flat[i].item<int64_t>(), e.get<int64_t>()) << name << "[" << i << "]";
        break;
      case at::kComplexFloat: {
        auto z = flat[i].item<c10::complex<float>>();
        EXPECT_EQ(static_cast<double>(z.real()), json_number(e[0])) << name << "[" << i << "]";
        EXPECT_EQ(static_cast<double>(z.imag()), json_number(e[1])) << name << "[" << i << "]";
        break;
      }
      default: {
        const double got = flat[i].to(at::kDouble).item<double>();
        const double want = e.is_boolean() ? double(e.get<bool>()) : json_number(e);
        if (std::isnan(want))
          EXPECT_TRUE(std::isnan(got)) << name << "[" << i << "] = " << got;
        else
          EXPECT_EQ(got, want) << name << "[" << i << "]";
      }
    }
  }
}

}  // namespace

TEST(SafetensorsPython, ReadsEveryDtypeExactly) {
  const auto path = prism::test::fixture("safetensors/all_dtypes.safetensors");
  const auto expected_path = prism::test::fixture("safetensors/expected.json");
  ASSERT_TRUE(fs::exists(path) && fs::exists(expected_path))
      << path << " missing: run tests/fixtures/make_fixtures.py (PRISM_FIXTURES=" << prism::test::fixtures_dir() << ")";
  const json expected = json::parse(read_bytes(expected_path));
  auto f = SafetensorsFile::open(path);
  using StringMap = std::map<std::string, std::string>;
  EXPECT_EQ(f->header().metadata, expected["metadata"].get<StringMap>());
  ASSERT_EQ(f->names().size(), expected["tensors"].size());
  std::set<std::string> dtypes;
  for (const auto& [name, e] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f->contains(name));
    auto t = f->get(name);
    EXPECT_EQ(f->info(name).dtype, e["dtype"].get<std::string>());
    EXPECT_EQ(scalar_type_to_safetensors(t.scalar_type()), e["dtype"].get<std::string>());
    EXPECT_EQ(t.sizes().vec(), e["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(to_hex(t), e["bytes_hex"].get<std::string>());
    expect_values(name, t, e["values"]);
    dtypes.insert(e["dtype"].get<std::string>());
  }
  // Every dtype the Python package can write is covered.
  EXPECT_EQ(dtypes.size(), 18u);
}

TEST(SafetensorsPython, WriterIsByteIdenticalToTheOfficialOne) {
  const auto path = prism::test::fixture("safetensors/all_dtypes.safetensors");
  ASSERT_TRUE(fs::exists(path)) << path;
  auto f = SafetensorsFile::open(path);
  NamedTensors tensors;
  // Reverse order on input: the writer must sort as the official one does.
  auto names = f->names();
  for (auto it = names.rbegin(); it != names.rend(); ++it) tensors.emplace_back(*it, f->get(*it));
  TmpDir dir;
  save_safetensors(dir / "again.safetensors", tensors, f->header().metadata);
  EXPECT_TRUE(read_bytes(dir / "again.safetensors") == read_bytes(path)) << "C++ and Python files differ";
}

TEST(SafetensorsPython, ReadsHuggingFaceHubShards) {
  const auto dir = prism::test::fixture("safetensors/hf_sharded");
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json")) << dir;
  CheckpointReader reader(dir);
  EXPECT_GE(reader.files().size(), 2u);
  EXPECT_EQ(reader.index_metadata().at("format"), "pt");
  uint64_t total = 0;
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    const std::string n = "w" + std::to_string(i);
    names.push_back(n);
    auto want = at::arange(64 * (i + 1), at::kFloat) * 0.25 - 1.0;
    total += want.nbytes();
    EXPECT_TRUE(same_bytes(reader.get(n), want)) << n;
  }
  EXPECT_EQ(reader.names(), names);
  EXPECT_EQ(reader.index_metadata().at("total_size"), std::to_string(total));
}
