#pragma once

// Reads Prometheus's text format (what GET /metrics answers) into samples,
// for tests: each sample under `name{label="value",...}` with its labels
// sorted by name, so that a test names a series however it was written.

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace vigil::test {

/// `name` with `labels` in the canonical form used as the key below.
inline std::string series(
  const std::string& name,
  std::vector<std::pair<std::string, std::string>> labels = {}) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  if (sorted.empty())
    return name;
  std::string out = name + "{";
  bool first = true;
  for (auto& [k, v] : sorted) {
    out += (first ? "" : ",") + k + "=\"" + v + "\"";
    first = false;
  }
  return out + "}";
}

/// Every sample of `text`, by series. Lines that are not samples (HELP,
/// TYPE, blank) are skipped; a sample line that does not parse throws.
inline std::map<std::string, double> parse_samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    if (space == std::string::npos)
      throw std::runtime_error("not a sample: " + line);
    std::string name;
    std::vector<std::pair<std::string, std::string>> labels;
    if (brace != std::string::npos && brace < space) {
      name = line.substr(0, brace);
      auto close = line.rfind('}');
      auto body = line.substr(brace + 1, close - brace - 1);
      size_t i = 0;
      while (i < body.size()) {
        auto eq = body.find('=', i);
        auto q1 = body.find('"', eq);
        std::string value;
        size_t j = q1 + 1;
        for (; j < body.size() && body[j] != '"'; ++j) {
          if (body[j] == '\\' && j + 1 < body.size())
            ++j;
          value.push_back(body[j]);
        }
        labels.emplace_back(body.substr(i, eq - i), value);
        i = j + 1;
        if (i < body.size() && body[i] == ',')
          ++i;
      }
    } else {
      name = line.substr(0, line.find(' '));
    }
    auto value = line.substr(space + 1);
    out[series(name, labels)] = value == "+Inf" ? 1e308
                                                : std::strtod(value.c_str(),
                                                              nullptr);
  }
  return out;
}

/// The value of `key` in `samples`, or -1 if it has none.
inline double value_of(const std::map<std::string, double>& samples,
                       const std::string& key) {
  auto i = samples.find(key);
  return i == samples.end() ? -1.0 : i->second;
}

} // namespace vigil::test
