# Debian-packaged dependencies. spdlog is kept to src/core/log.cpp (torch bundles its own fmt).
find_package(nlohmann_json 3 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(Threads REQUIRED)
if(PRISM_BUILD_TOOLS)
  find_package(CLI11 CONFIG REQUIRED)
endif()
