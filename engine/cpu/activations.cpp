#include "engine/cpu/ops.h"
