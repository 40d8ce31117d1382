/* libFuzzer target: see spec/fuzz/targets/yaml.lua for the properties checked. */
#define FUZZ_TARGET "yaml"
#include "harness.h"
