// Decision files (DIR/approvals/*.json): how `vigil approvals approve|reject`
// hands a decision to the node that holds the data dir, and how a decision
// is taken in.

#include "vigil/persistence/approvals.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "vigil/persistence/record.hpp"

namespace vigil {

namespace {

namespace fs = std::filesystem;

/// A decision file is a few hundred bytes; anything this big is not one.
constexpr std::uintmax_t max_file_size = 64 * 1024;

status io_error(const std::string& what, const std::string& path,
                int err = errno) {
  return {store_errc::io, what + " " + path + ": " + std::strerror(err)};
}

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size()
         && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

status write_all(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return io_error("cannot write", path);
    done += static_cast<size_t>(n);
  }
  return {};
}

status fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0)
    return io_error("cannot open", path);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? status{} : io_error("cannot fsync", path, err);
}

std::string zero_padded(uint64_t n, size_t width) {
  auto s = std::to_string(n);
  return s.size() >= width ? s : std::string(width - s.size(), '0') + s;
}

} // namespace

std::string decision_dir(const std::string& data_dir) {
  return data_dir + "/approvals";
}

status write_decision_file(const std::string& data_dir,
                           const approval_decision& d, std::string& path) {
  records::ApprovalDecision m;
  m.set_id(d.id);
  m.set_key(hex_encode(d.key));
  m.set_decision(d.to == approval_state::approved ? "approve" : "reject");
  m.set_by(d.by);
  m.set_reason(d.reason);
  m.set_unix_ms(d.unix_ms);
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(m, &text, o).ok())
    return {store_errc::invalid, "cannot render the decision about approval "
                                   + d.id + " as JSON"};
  auto dir = decision_dir(data_dir);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return io_error("cannot create the folder", dir);
  static std::atomic<uint32_t> seq{0};
  // Names sort by the decision's time, so the node takes them in in order.
  auto name = zero_padded(d.unix_ms, 13) + "-" + d.id + "-"
              + m.decision() + "-" + std::to_string(::getpid()) + "-"
              + std::to_string(seq++) + ".json";
  auto tmp = dir + "/." + name + ".tmp";
  path = dir + "/" + name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return io_error("cannot create", tmp);
  auto st = write_all(fd, text, tmp);
  if (!st && ::fsync(fd) != 0)
    st = io_error("cannot fsync", tmp);
  ::close(fd);
  if (!st && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = io_error("cannot rename " + tmp + " to", path);
  if (st) {
    ::unlink(tmp.c_str());
    return st;
  }
  // The rename is durable once the folder is synced.
  return fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

status list_decision_files(const std::string& data_dir,
                           std::vector<std::string>& out) {
  out.clear();
  auto dir = decision_dir(data_dir);
  std::error_code ec;
  fs::directory_iterator it{dir, ec};
  if (ec == std::errc::no_such_file_or_directory)
    return {};
  if (ec)
    return {store_errc::io,
            "cannot read the folder " + dir + ": " + ec.message()};
  for (; it != fs::directory_iterator{}; it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || !ends_with(name, ".json"))
      continue;
    if (!it->is_regular_file(ec))
      continue;
    out.push_back(it->path().string());
  }
  if (ec)
    return {store_errc::io,
            "cannot read the folder " + dir + ": " + ec.message()};
  std::sort(out.begin(), out.end());
  return {};
}

bool read_decision_file(const std::string& path, approval_decision& out,
                        std::string& why) {
  auto fail = [&](const std::string& what) {
    why = "decision file " + path + ": " + what;
    return false;
  };
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec)
    return fail("cannot read it: " + ec.message());
  if (size > max_file_size)
    return fail("it has " + std::to_string(size) + " bytes; a decision has "
                "fewer than " + std::to_string(max_file_size));
  std::ifstream in{path, std::ios::binary};
  std::stringstream buf;
  buf << in.rdbuf();
  if (!in)
    return fail("cannot read it");
  records::ApprovalDecision m;
  google::protobuf::util::JsonParseOptions o; // unknown fields are errors
  if (auto s = google::protobuf::util::JsonStringToMessage(buf.str(), &m, o);
      !s.ok()) {
    // Protobuf's parser points at the place on lines of their own.
    std::string msg{s.message()};
    msg = msg.substr(0, msg.find('\n'));
    return fail("not a decision (JSON with id, key, decision, by, reason, "
                "unix_ms): " + msg);
  }
  out = approval_decision{};
  auto lower_hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  };
  if (m.id().size() != approval_id_size
      || !std::all_of(m.id().begin(), m.id().end(), lower_hex))
    return fail("field \"id\": \"" + m.id() + "\" is not "
                + std::to_string(approval_id_size) + " lower-case hex digits");
  if (m.key().empty() || !hex_decode(m.key(), out.key))
    return fail("field \"key\": not the hex of an approval's key");
  if (approval_id(out.key) != m.id())
    return fail("field \"id\": " + m.id() + " is not the id of its key (that "
                "is " + approval_id(out.key) + ")");
  if (m.decision() == "approve")
    out.to = approval_state::approved;
  else if (m.decision() == "reject")
    out.to = approval_state::rejected;
  else
    return fail("field \"decision\": \"" + m.decision()
                + "\" is neither \"approve\" nor \"reject\"");
  if (m.by().empty())
    return fail("field \"by\": empty; a decision names who made it");
  if (out.to == approval_state::rejected && m.reason().empty())
    return fail("field \"reason\": empty; a rejection gives its reason");
  if (m.unix_ms() == 0)
    return fail("field \"unix_ms\": missing or 0");
  out.id = m.id();
  out.by = m.by();
  out.reason = m.reason();
  out.unix_ms = m.unix_ms();
  return true;
}

decision_step examine_decision(const std::string& path,
                               const approval_lookup& lookup) {
  decision_step step;
  std::string why;
  if (!read_decision_file(path, step.decision, why)) {
    step.what = decision_step::kind::bad;
    step.text = why;
    return step;
  }
  auto& d = step.decision;
  auto head = "decision file " + path + " (approval " + d.id + "): ";
  approval_entry e;
  switch (lookup(d.key, e)) {
    case lookup_result::missing:
      step.what = decision_step::kind::bad;
      step.text = head + "no approval has its key \"" + printable_key(d.key)
                  + "\"";
      return step;
    case lookup_result::busy:
      step.what = decision_step::kind::wait;
      step.text = head + "its request is not committed yet";
      return step;
    case lookup_result::found:
      break;
  }
  if (!e.fault.empty()) {
    step.what = decision_step::kind::bad;
    step.text = head + "its record cannot be read: " + e.fault;
    return step;
  }
  step.next = std::move(e.rec);
  step.effect = decide(step.next, d, why);
  step.what = step.effect == decision_effect::ignored
                ? decision_step::kind::drop
                : decision_step::kind::write;
  step.text = head + why;
  return step;
}

status quarantine_decision_file(const std::string& path) {
  auto bad = path + ".bad";
  if (::rename(path.c_str(), bad.c_str()) != 0)
    return io_error("cannot rename " + path + " to", bad);
  return {};
}

status remove_decision_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return io_error("cannot delete", path);
  return {};
}

status take_decisions(store& st, std::vector<std::string>& log) {
  auto& dir = st.options().dir;
  std::vector<std::string> files;
  if (auto s = list_decision_files(dir, files))
    return s;
  status failed;
  auto lookup = [&](const std::string& key, approval_entry& e) {
    bool found = false;
    if (auto s = get_approval(st, key, e, found)) {
      failed = std::move(s);
      return lookup_result::busy; // the file stays
    }
    return found ? lookup_result::found : lookup_result::missing;
  };
  for (auto& f : files) {
    auto step = examine_decision(f, lookup);
    if (failed)
      return failed;
    switch (step.what) {
      case decision_step::kind::write: {
        write_item item;
        item.muts.push_back({mutation::op::put, db::approvals,
                             step.decision.key, encode_record(step.next)});
        write_item* p = &item;
        write_result r;
        if (auto s = st.apply(&p, 1, &r))
          return {s.code(), step.text + ": not stored: " + s.message()};
        if (auto s = remove_decision_file(f))
          return s;
        break;
      }
      case decision_step::kind::drop:
        if (auto s = remove_decision_file(f))
          return s;
        break;
      case decision_step::kind::bad:
        if (auto s = quarantine_decision_file(f))
          return s;
        step.text += "; renamed to " + f + ".bad";
        break;
      case decision_step::kind::wait:
        break;
    }
    log.push_back(std::move(step.text));
  }
  return {};
}

} // namespace vigil
