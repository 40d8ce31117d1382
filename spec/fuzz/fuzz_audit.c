/* libFuzzer target: see spec/fuzz/targets/audit.lua for the properties checked. */
#define FUZZ_TARGET "audit"
#include "harness.h"
