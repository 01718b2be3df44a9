// Shared helpers for the C++ tests: where fixtures live and tolerance checks that say where
// the first mismatch is (the first diverging layer or element), not just that one exists.
#pragma once

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace prism::test {

/// Directory written by tests/fixtures/make_fixtures.py ($PRISM_FIXTURES).
std::string fixtures_dir();
/// Fixture path `<fixtures>/<rel>`; GTEST_SKIP-worthy absence is reported as a failure.
std::string fixture(const std::string& rel);
/// Every model fixture tests/fixtures/make_fixtures.py writes (its specs(), in that order): the
/// one list every per-family test iterates (`::testing::ValuesIn(model_fixtures())`). Adding a
/// family adds its fixture here and in make_fixtures.py; FixtureList.MatchesTheGeneratedIndex
/// fails when the two differ.
const std::vector<std::string>& model_fixtures();

/// Directory of the built binaries ($PRISM_BIN).
std::string bin_dir();
/// The source tree ($PRISM_SOURCE).
std::string source_dir();
/// A fresh temp directory removed at process exit is not guaranteed: tests clean up themselves.
std::string make_temp_dir(const std::string& tag);

/// max|a-b| (in fp64).
double max_abs_diff(const at::Tensor& a, const at::Tensor& b);
double max_abs(const at::Tensor& a);

/// Asserts max|actual-expected| <= rel * max|expected| (+ abs). Message names `what` and the
/// position of the largest error.
::testing::AssertionResult close_rel(const at::Tensor& actual, const at::Tensor& expected, double rel,
                                     double abs = 0.0, const std::string& what = "");

/// Central difference d loss / d inputs[i].view(-1)[k] at step `eps`, in float64: each call of
/// `loss` gets fresh detached copies of `inputs` with entry k of input i shifted.
double central_difference(const std::function<double(const std::vector<at::Tensor>&)>& loss,
                          const std::vector<at::Tensor>& inputs, size_t i, int64_t k, double eps = 1e-6);

/// Every tensor of an HF checkpoint directory (single or sharded), by name, as owned copies.
std::map<std::string, at::Tensor> checkpoint_weights(const std::string& dir);
/// Asserts two checkpoints hold the same tensors: bit for bit when rel == 0, else close_rel.
void expect_same_weights(const std::string& a, const std::string& b, double rel);

}  // namespace prism::test
