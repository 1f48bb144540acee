#pragma once

// A generic mapper from YAML onto any Protobuf message, by reflection, that
// remembers where in the file each message and field was written. It is what
// keeps the policy file and its schema (proto/vigil/policy.proto) in step:
// a key is valid exactly when it is a field. The conventions (enum words,
// durations, the `mode` shorthand, vigil.policy.Reply) are listed in the
// schema's header comment.

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/message.h>
#include <yaml-cpp/yaml.h>

namespace vigil::cli {

/// A 1-based line and column in a YAML text; 0:0 means unknown.
struct position {
  int line = 0;
  int column = 0;

  bool known() const noexcept {
    return line > 0;
  }
};

/// One problem found while reading or mapping YAML.
struct yaml_error {
  position at;
  std::string message; ///< e.g. `period: "5 seconds" is not a duration; ...`
};

/// Where each message and each field was written. Keys are a message's
/// address and a field number, or -1 for the message itself (the value's
/// position; for list elements, the element's). A field's position is its
/// key's. The addresses must stay valid while the marks are read: do not
/// copy or move the mapped message in between.
class marks {
public:
  void set(const google::protobuf::Message* msg, int field, position at) {
    at_[{msg, field}] = at;
  }

  /// The position recorded for `field` of `msg` (-1: `msg` itself), or
  /// nullptr.
  const position* find(const google::protobuf::Message* msg,
                       int field = -1) const {
    auto i = at_.find({msg, field});
    return i != at_.end() ? &i->second : nullptr;
  }

  /// Notes that the value written for `field` of `msg` was rejected (it
  /// kept its default), so that later checks need not blame it again.
  void set_bad(const google::protobuf::Message* msg, int field) {
    bad_.insert({msg, field});
  }

  bool bad(const google::protobuf::Message* msg, int field) const {
    return bad_.count({msg, field}) != 0;
  }

private:
  using key = std::pair<const google::protobuf::Message*, int>;
  std::map<key, position> at_;
  std::set<key> bad_;
};

/// Parses `text` into `out`. On a syntax error, appends one error
/// `YAML syntax: <what>` at its position and returns false.
bool parse_yaml(const std::string& text, YAML::Node& out,
                std::vector<yaml_error>& errors);

/// Maps `node` onto `msg` (which should be empty), recording positions in
/// `at` and appending every problem to `errors`; never stops at the first.
/// A field whose value is rejected keeps its default. `label` names `msg` in
/// messages about its own kind (e.g. "policy: expected a mapping").
void map_yaml(const YAML::Node& node, google::protobuf::Message& msg,
              marks& at, std::vector<yaml_error>& errors,
              const std::string& label = "");

/// The word for an enum value in a policy file: its name without the enum's
/// prefix, in lower case (STRATEGY_ONE_FOR_ALL of Strategy: `one_for_all`).
std::string enum_word(const google::protobuf::EnumValueDescriptor& value);

} // namespace vigil::cli
