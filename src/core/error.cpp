#include "prism/core/error.h"
