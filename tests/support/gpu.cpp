#include "tests/support/gpu.h"
