// The `vigil` command: run, check, inspect, dead-letters (see README).
#include "vigil/cli/app.hpp"

int main(int argc, char** argv) {
  return vigil::cli::main(argc, argv);
}
