// Precompiled for every torch-using module: the ATen core is what nearly every TU needs, and
// parsing it once instead of per TU is most of prism's compile time on a 2-core machine.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <memory>
#include <string>
#include <vector>
#include <map>
#include <optional>
