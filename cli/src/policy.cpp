#include "vigil/cli/policy.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include <google/protobuf/duration.pb.h>

#include <spdlog/common.h>

#include "vigil/metrics/exporter.hpp"
#include "vigil/supervision/message_types.hpp"
#include "vigil/supervision/policy.hpp"
#include "yaml_map.hpp"

namespace vigil::cli {

std::string policy_error::to_string() const {
  if (line == 0) // about the file as a whole (it cannot be read, say)
    return file + ": " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column)
         + ": " + message;
}

namespace {

namespace pol = vigil::policy;
using google::protobuf::Message;
using std::chrono::milliseconds;

milliseconds to_ms(const google::protobuf::Duration& d) {
  return milliseconds{d.seconds() * 1000 + d.nanos() / 1000000};
}

sync_mode to_sync(pol::Sync x) {
  switch (x) {
    case pol::SYNC_NOMETASYNC: return sync_mode::nometasync;
    case pol::SYNC_NOSYNC: return sync_mode::nosync;
    default: return sync_mode::full;
  }
}

// What the conversion into specs (vigil/supervision/policy.hpp) asks of
// the file: which fields were written, which values were rejected, and
// where each was.
class yaml_source : public policy_source {
public:
  yaml_source(const std::string& file, const marks& at)
    : file_(file), at_(at) {
  }

  bool written(const Message& m, int field) const override {
    return at_.find(&m, field) != nullptr;
  }

  bool rejected(const Message& m, int field) const override {
    return at_.bad(&m, field);
  }

  std::string where(const Message& m, int field) const override {
    auto at = pos(&m, field);
    return file_ + ":" + std::to_string(at.line) + ":"
           + std::to_string(at.column);
  }

  // Where `field` of `m` was written, else where `m` was, else 1:1.
  position pos(const Message* m, int field = -1) const {
    if (m == nullptr)
      return {1, 1};
    if (auto* p = at_.find(m, field))
      return *p;
    if (auto* p = at_.find(m))
      return *p;
    return {1, 1};
  }

private:
  const std::string& file_;
  const marks& at_;
};

// The node's settings; its tools are converted by tools_from_policy and the
// tree by spec_from_policy.
void read_node(const pol::Node& n, const yaml_source& src, loaded_policy& out,
               std::vector<yaml_error>& errors) {
  auto fail = [&](position at, std::string what) {
    errors.push_back({at.known() ? at : position{1, 1}, std::move(what)});
  };
  out.name = n.name().empty() ? "root" : n.name();
  if (out.name.find('/') != std::string::npos)
    fail(src.pos(&n, pol::Node::kNameFieldNumber),
         "node.name: a path segment may not contain '/'");
  out.node.data_dir = n.data_dir();
  out.node.sync = to_sync(n.sync());
  out.node.threads = n.has_threads() ? n.threads() : 2;
  if (n.has_threads() && n.threads() == 0)
    fail(src.pos(&n, pol::Node::kThreadsFieldNumber),
         "node.threads: allowed: 1 or more");
  if (n.has_idempotency_retention())
    out.node.writer.idempotency_retention = to_ms(n.idempotency_retention());
  if (n.has_tool_result_retention())
    out.node.writer.tool_result_retention = to_ms(n.tool_result_retention());
  if (!n.metrics().empty()) {
    std::string host, why;
    uint16_t port = 0;
    if (!metrics::parse_address(n.metrics(), host, port, why))
      fail(src.pos(&n, pol::Node::kMetricsFieldNumber), "node.metrics: " + why);
    out.node.metrics = n.metrics();
  }
  if (n.has_log()) {
    log_settings ls;
    ls.format = n.log().format() == pol::LOG_FORMAT_JSON ? log_format::json
                                                         : log_format::text;
    if (!n.log().level().empty()) {
      auto lvl = spdlog::level::from_str(n.log().level());
      // from_str gives `off` for any word it does not know.
      if (lvl == spdlog::level::off && n.log().level() != "off")
        fail(src.pos(&n.log(), pol::Log::kLevelFieldNumber),
             "node.log.level: \"" + n.log().level()
               + "\" is not a level; allowed: trace, debug, info, warn, "
                 "error, critical, off");
      ls.level = lvl;
    }
    out.node.log = ls;
  }
}

} // namespace

std::vector<policy_error> load_policy_text(const std::string& text,
                                           const std::string& file,
                                           const registry& types,
                                           loaded_policy& out) {
  link_own_schemas(); // a policy may name vigil.builtin.* types
  out = loaded_policy{};
  std::vector<yaml_error> found;
  YAML::Node doc;
  policy::Policy pb;
  marks at;
  if (parse_yaml(text, doc, found)) {
    map_yaml(doc, pb, at, found);
    yaml_source src{file, at};
    read_node(pb.node(), src, out, found);
    auto add = [&](std::vector<policy_problem> problems) {
      for (auto& p : problems) {
        auto where = src.pos(p.msg, p.field);
        found.push_back(
          {where.known() ? where : position{1, 1}, std::move(p.text)});
      }
    };
    add(tools_from_policy(pb.node(), types, src, out.node.tools));
    if (pb.has_tree()) {
      add(spec_from_policy(pb.tree(), types, src, out.tree,
                           &out.node.tools));
    } else if (!at.find(&pb, policy::Policy::kTreeFieldNumber)
               && (doc.IsMap() || doc.IsNull())) {
      found.push_back({{1, 1}, "missing \"tree\": the root supervisor"});
    }
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const yaml_error& x, const yaml_error& y) {
                     return std::tie(x.at.line, x.at.column)
                            < std::tie(y.at.line, y.at.column);
                   });
  std::vector<policy_error> errors;
  for (auto& e : found)
    errors.push_back({file, e.at.line, e.at.column, e.message});
  out.pb = std::move(pb);
  return errors;
}

std::vector<policy_error> load_policy_file(const std::string& path,
                                           const registry& types,
                                           loaded_policy& out) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    out = loaded_policy{};
    return {{path, 0, 0, "is a directory; give a policy file (YAML)"}};
  }
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    out = loaded_policy{};
    return {{path, 0, 0, std::string{"cannot read the file: "}
                           + std::strerror(errno)}};
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    out = loaded_policy{};
    return {{path, 0, 0, std::string{"cannot read the file: "}
                           + std::strerror(errno)}};
  }
  return load_policy_text(text.str(), path, types, out);
}

} // namespace vigil::cli
