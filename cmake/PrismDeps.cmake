# Debian-packaged dependencies. spdlog is kept to src/core/log.cpp (torch bundles its own fmt).
find_package(nlohmann_json 3 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(Threads REQUIRED)
if(PRISM_BUILD_TOOLS)
  find_package(CLI11 CONFIG REQUIRED)
endif()
find_package(PkgConfig REQUIRED)
pkg_check_modules(PRISM_ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(PRISM_PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# GiNaC: symbolic equality of math answers (rewards; used only inside its worker processes).
pkg_check_modules(PRISM_GINAC REQUIRED IMPORTED_TARGET ginac)
pkg_check_modules(PRISM_SECCOMP REQUIRED IMPORTED_TARGET libseccomp)
