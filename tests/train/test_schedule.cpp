// LR schedules: factors at the key steps of every kind, against hand-computed literals (the
// arithmetic is in the comment beside each), and config validation naming the key.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/train/schedule.h"

namespace prism::train {
namespace {

constexpr double kTol = 1e-12;

ScheduleConfig make(ScheduleKind kind, std::int64_t warmup, double min_ratio) {
  ScheduleConfig c;
  c.kind = kind;
  c.warmup_steps = warmup;
  c.min_lr_ratio = min_ratio;
  return c;
}

// The error names `key` (and is a prism::Error).
void expect_key_error(const ScheduleConfig& c, std::int64_t total, const std::string& key) {
  try {
    lr_factor(c, 0, total);
    FAIL() << "expected an error naming " << key;
  } catch (const Error& e) {
    EXPECT_EQ(e.context().key, key) << e.what();
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

TEST(Schedule, StudyCosineDefaults) {
  // Paper Table 16: 500 warmup, cosine over 24,500 steps to 0.1; the struct defaults are that.
  ScheduleConfig c;
  EXPECT_EQ(c.kind, ScheduleKind::kCosine);
  EXPECT_EQ(c.warmup_steps, 500);
  EXPECT_EQ(c.min_lr_ratio, 0.1);
  const std::int64_t n = 25000;
  EXPECT_EQ(lr_factor(c, 0, n), 0.0);                            // 0 / 500: step 0 runs at LR 0
  EXPECT_NEAR(lr_factor(c, 1, n), 0.002, kTol);                  // 1 / 500
  EXPECT_NEAR(lr_factor(c, 499, n), 0.998, kTol);                // 499 / 500
  EXPECT_NEAR(lr_factor(c, 500, n), 1.0, kTol);                  // x = 0: 0.1 + 0.9 * (1 + cos 0) / 2
  EXPECT_NEAR(lr_factor(c, 6625, n), 0.8681980515339464, kTol);  // x/D = 6125/24500 = 1/4:
                                                                 // 0.1 + 0.45 * (1 + cos(pi/4))
  EXPECT_NEAR(lr_factor(c, 12750, n), 0.55, kTol);               // x/D = 1/2: 0.1 + 0.45 * (1 + 0)
  // Last step x = 24499: 0.1 + 0.9 * (1 - cos(pi/24500)) / 2 = 0.1 + 0.9 * sin^2(pi/49000).
  EXPECT_NEAR(lr_factor(c, 24999, n), 0.10000000369956016, kTol);
  EXPECT_EQ(lr_factor(c, 25000, n), 0.1);  // beyond: the final factor
  EXPECT_EQ(lr_factor(c, 1000000, n), 0.1);
}

TEST(Schedule, Linear) {
  const auto c = make(ScheduleKind::kLinear, 10, 0.1);  // W = 10, N = 110, D = 100
  EXPECT_EQ(lr_factor(c, 0, 110), 0.0);                 // 0 / 10
  EXPECT_NEAR(lr_factor(c, 9, 110), 0.9, kTol);         // 9 / 10
  EXPECT_NEAR(lr_factor(c, 10, 110), 1.0, kTol);        // 1 - 0.9 * 0/100
  EXPECT_NEAR(lr_factor(c, 60, 110), 0.55, kTol);       // 1 - 0.9 * 50/100
  EXPECT_NEAR(lr_factor(c, 109, 110), 0.109, kTol);     // 1 - 0.9 * 99/100
  EXPECT_EQ(lr_factor(c, 110, 110), 0.1);               // beyond
}

TEST(Schedule, Constant) {
  const auto c = make(ScheduleKind::kConstant, 10, 0.1);  // min_lr_ratio does not apply
  EXPECT_EQ(lr_factor(c, 0, 110), 0.0);
  EXPECT_NEAR(lr_factor(c, 9, 110), 0.9, kTol);
  EXPECT_EQ(lr_factor(c, 10, 110), 1.0);
  EXPECT_EQ(lr_factor(c, 60, 110), 1.0);
  EXPECT_EQ(lr_factor(c, 109, 110), 1.0);
  EXPECT_EQ(lr_factor(c, 500, 110), 1.0);
}

TEST(Schedule, ExponentialToZero) {
  // Paper Table 17 (long-context stage): 100 warmup, exponential decay to factor 0. N = 1000, D = 900.
  const auto c = make(ScheduleKind::kExponential, 100, 0.0);
  EXPECT_EQ(lr_factor(c, 0, 1000), 0.0);            // 0 / 100
  EXPECT_NEAR(lr_factor(c, 99, 1000), 0.99, kTol);  // 99 / 100
  EXPECT_NEAR(lr_factor(c, 100, 1000), 1.0, kTol);  // (e * e^0 - 1) / (e - 1)
  // x = 450: (e * e^-0.5 - 1) / (e - 1) = (sqrt(e) - 1) / (e - 1) = 0.648721 / 1.718282
  EXPECT_NEAR(lr_factor(c, 550, 1000), 0.3775406687981455, kTol);
  // x = 899: (e * e^(-899/900) - 1) / (e - 1) = (e^(1/900) - 1) / (e - 1)
  EXPECT_NEAR(lr_factor(c, 999, 1000), 0.0006470001633817972, kTol);
  EXPECT_EQ(lr_factor(c, 1000, 1000), 0.0);  // beyond: clamped at f (DE's formula goes negative)
  EXPECT_EQ(lr_factor(c, 5000, 1000), 0.0);
}

TEST(Schedule, ExponentialToFraction) {
  const auto c = make(ScheduleKind::kExponential, 100, 0.1);
  EXPECT_NEAR(lr_factor(c, 100, 1000), 1.0, kTol);
  EXPECT_NEAR(lr_factor(c, 550, 1000), 0.43978660191833097, kTol);  // 0.1 + 0.9 * 0.3775406687981455
  EXPECT_EQ(lr_factor(c, 1000, 1000), 0.1);
  // DE's form a * exp(-x/T) + b with a = (1-f)e/(e-1), b = (fe-1)/(e-1) gives the same numbers.
  const double e = std::exp(1.0), f = 0.1;
  const double de = (1 - f) * e / (e - 1) * std::exp(-450.0 / 900.0) + (f * e - 1) / (e - 1);
  EXPECT_NEAR(lr_factor(c, 550, 1000), de, kTol);
}

TEST(Schedule, WsdAllDecayKinds) {
  auto c = make(ScheduleKind::kWsd, 10, 0.1);  // W = 10, N = 110, decay over the last 20 (from step 90)
  c.decay_steps = 20;
  for (auto kind : {DecayKind::kSqrt, DecayKind::kLinear, DecayKind::kCosine}) {
    c.decay_kind = kind;
    EXPECT_EQ(lr_factor(c, 0, 110), 0.0);
    EXPECT_NEAR(lr_factor(c, 9, 110), 0.9, kTol);   // 9 / 10
    EXPECT_EQ(lr_factor(c, 10, 110), 1.0);          // stable
    EXPECT_EQ(lr_factor(c, 89, 110), 1.0);          // last stable step
    EXPECT_NEAR(lr_factor(c, 90, 110), 1.0, kTol);  // decay x = 0
    EXPECT_EQ(lr_factor(c, 110, 110), 0.1);         // beyond
  }
  c.decay_kind = DecayKind::kSqrt;
  EXPECT_NEAR(lr_factor(c, 100, 110), 0.36360389693210715, kTol);  // 0.1 + 0.9 * (1 - sqrt(10/20))
  EXPECT_NEAR(lr_factor(c, 109, 110), 0.1227885089671933, kTol);   // 0.1 + 0.9 * (1 - sqrt(19/20))
  c.decay_kind = DecayKind::kLinear;
  EXPECT_NEAR(lr_factor(c, 100, 110), 0.55, kTol);   // 1 - 0.9 * 10/20
  EXPECT_NEAR(lr_factor(c, 109, 110), 0.145, kTol);  // 1 - 0.9 * 19/20
  c.decay_kind = DecayKind::kCosine;
  EXPECT_NEAR(lr_factor(c, 100, 110), 0.55, kTol);                 // 0.1 + 0.45 * (1 + cos(pi/2))
  EXPECT_NEAR(lr_factor(c, 109, 110), 0.10554024673218806, kTol);  // 0.1 + 0.45 * (1 + cos(0.95 pi))
}

TEST(Schedule, WsdDefaultDecayIsTwentyPercent) {
  auto c = make(ScheduleKind::kWsd, 10, 0.0);  // N = 100: decay over the last 100 / 5 = 20, from step 80
  c.decay_kind = DecayKind::kLinear;
  EXPECT_EQ(lr_factor(c, 79, 100), 1.0);
  EXPECT_NEAR(lr_factor(c, 80, 100), 1.0, kTol);
  EXPECT_NEAR(lr_factor(c, 90, 100), 0.5, kTol);   // 1 - 10/20
  EXPECT_NEAR(lr_factor(c, 99, 100), 0.05, kTol);  // 1 - 19/20
  EXPECT_EQ(lr_factor(c, 100, 100), 0.0);
}

TEST(Schedule, NoWarmupAndWarmupOnly) {
  const auto c = make(ScheduleKind::kCosine, 0, 0.1);  // N = 4, D = 4
  EXPECT_NEAR(lr_factor(c, 0, 4), 1.0, kTol);
  EXPECT_NEAR(lr_factor(c, 2, 4), 0.55, kTol);         // 0.1 + 0.45 * (1 + cos(pi/2))
  const auto w = make(ScheduleKind::kCosine, 4, 0.1);  // W = N: every step is a warmup step
  EXPECT_NEAR(lr_factor(w, 3, 4), 0.75, kTol);         // 3 / 4
  EXPECT_EQ(lr_factor(w, 4, 4), 0.1);
}

TEST(Schedule, ValidationNamesTheKey) {
  expect_key_error(make(ScheduleKind::kCosine, 600, 0.1), 500, "warmup_steps");  // warmup > total
  expect_key_error(make(ScheduleKind::kCosine, -1, 0.1), 500, "warmup_steps");
  expect_key_error(make(ScheduleKind::kCosine, 10, 1.5), 500, "min_lr_ratio");
  expect_key_error(make(ScheduleKind::kCosine, 10, -0.1), 500, "min_lr_ratio");
  expect_key_error(make(ScheduleKind::kCosine, 10, std::nan("")), 500, "min_lr_ratio");
  expect_key_error(make(ScheduleKind::kCosine, 10, 0.1), 0, "total_steps");
  auto wsd = make(ScheduleKind::kWsd, 90, 0.1);
  wsd.decay_steps = 20;
  expect_key_error(wsd, 100, "decay_steps");  // 90 + 20 > 100
  wsd.decay_steps = 0;                        // 90 + 100/5 > 100
  expect_key_error(wsd, 100, "decay_steps");
  auto cos = make(ScheduleKind::kCosine, 10, 0.1);
  cos.decay_steps = 5;  // would be silently ignored
  expect_key_error(cos, 100, "decay_steps");
  EXPECT_THROW(lr_factor(make(ScheduleKind::kCosine, 10, 0.1), -1, 100), Error);
}

TEST(Schedule, YamlRoundTripAndKeyErrors) {
  const auto c = config::parse_config_string<ScheduleConfig>(
      "kind: wsd\nwarmup_steps: 100\nmin_lr_ratio: 0\ndecay_steps: 1000\ndecay_kind: linear\n");
  EXPECT_EQ(c.kind, ScheduleKind::kWsd);
  EXPECT_EQ(c.decay_kind, DecayKind::kLinear);
  EXPECT_EQ(c.decay_steps, 1000);
  EXPECT_EQ(config::parse_config_string<ScheduleConfig>(config::dump_config(c)), c);
  auto key_of = [](const std::string& yaml) {
    try {
      config::parse_config_string<ScheduleConfig>(yaml);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(key_of("min_lr_ratio: 2\n").find("min_lr_ratio"), std::string::npos);
  EXPECT_NE(key_of("kind: step\n").find("kind"), std::string::npos);
  EXPECT_NE(key_of("warmup_steps: -5\n").find("warmup_steps"), std::string::npos);
  EXPECT_NE(key_of("kind: cosine\ndecay_steps: 3\n").find("decay_steps"), std::string::npos);
}

}  // namespace
}  // namespace prism::train
