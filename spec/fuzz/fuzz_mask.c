/* libFuzzer target: see spec/fuzz/targets/mask.lua for the properties checked. */
#define FUZZ_TARGET "mask"
#include "harness.h"
