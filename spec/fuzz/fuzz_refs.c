/* libFuzzer target: see spec/fuzz/targets/refs.lua for the properties checked. */
#define FUZZ_TARGET "refs"
#include "harness.h"
