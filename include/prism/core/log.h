// Logging behind a small API, so that spdlog/fmt never meet torch's bundled fmt in one TU.
// The library never prints to stdout: log lines go to stderr (or a sink the caller installs).
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace prism::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

void debug(std::string_view msg);
void info(std::string_view msg);
void warn(std::string_view msg);
void error(std::string_view msg);

/// Lowest level that is emitted (default kInfo, or PRISM_LOG_LEVEL=debug|info|warn|error|off).
void set_level(Level level);
Level level();

}  // namespace prism::log
