// spdlog lives only in this TU (torch ships its own fmt; keeping them apart avoids ODR clashes).
#include "prism/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>
#include <memory>

namespace prism::log {
namespace {

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
    case Level::kOff: return spdlog::level::off;
  }
  return spdlog::level::info;
}

Level initial_level() {
  const char* e = std::getenv("PRISM_LOG_LEVEL");
  if (!e) return Level::kInfo;
  if (!std::strcmp(e, "debug")) return Level::kDebug;
  if (!std::strcmp(e, "warn")) return Level::kWarn;
  if (!std::strcmp(e, "error")) return Level::kError;
  if (!std::strcmp(e, "off")) return Level::kOff;
  return Level::kInfo;
}

// The logger is created on first use and owned by spdlog's registry-free shared_ptr here; it is
// thread-safe (the _mt sink) and writes to stderr so stdout stays clean for CLI output.
spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = std::make_shared<spdlog::logger>("prism", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    lg->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
    lg->set_level(to_spd(initial_level()));
    return lg;
  }();
  return *l;
}

}  // namespace

void debug(std::string_view m) { logger().debug("{}", m); }
void info(std::string_view m) { logger().info("{}", m); }
void warn(std::string_view m) { logger().warn("{}", m); }
void error(std::string_view m) { logger().error("{}", m); }
void set_level(Level l) { logger().set_level(to_spd(l)); }
Level level() {
  switch (logger().level()) {
    case spdlog::level::trace:
    case spdlog::level::debug: return Level::kDebug;
    case spdlog::level::info: return Level::kInfo;
    case spdlog::level::warn: return Level::kWarn;
    case spdlog::level::err:
    case spdlog::level::critical: return Level::kError;
    default: return Level::kOff;
  }
}

}  // namespace prism::log
