#include "vigil/node/node.hpp"

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <spdlog/spdlog.h>

#include "vigil/actors/approvals.hpp"
#include "vigil/actors/cell.hpp"
#include "vigil/actors/detail/actor_clock.hpp"
#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/actors/detail/log.hpp"
#include "vigil/persistence/approvals.hpp"
#include "vigil/persistence/integrity.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/store.pb.h"
#include "vigil/supervision/message_types.hpp"
#include "watch.hpp"

namespace vigil {

namespace {

class config : public caf::actor_system_config {
public:
  explicit config(const node_config& nc) {
    set("scheduler.max-threads", nc.threads);
    set("scheduler.policy", caf::atom_from_string(nc.scheduler_policy));
    set("scheduler.max-throughput", nc.max_throughput);
    set("logger.console", caf::atom("none"));
    vigil::add_message_types(*this);
    add_error_category(caf::atom("vigil"),
                       [](uint8_t code, caf::atom_value,
                          const caf::message& ctx) -> std::string {
                         auto err = make_error(static_cast<errc>(code));
                         std::string out = to_string(static_cast<errc>(code));
                         if (ctx.match_elements<std::string>())
                           out += ": " + ctx.get_as<std::string>(0);
                         return out;
                       });
  }
};

using sweep_atom = caf::atom_constant<caf::atom("vsweep")>;

/// How long which_children and count_children wait for a busy supervisor.
const caf::duration query_timeout{std::chrono::seconds{5}};

int64_t to_ns(time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           t.time_since_epoch())
    .count();
}

} // namespace

struct node::impl {
  explicit impl(registry types, const node_config& nc)
    : cfg_copy(nc),
      cfg(nc),
      sys(cfg),
      rt(std::make_shared<runtime>(std::move(types))) {
    // nop
  }

  node_config cfg_copy;
  config cfg;
  caf::actor_system sys;
  std::shared_ptr<runtime> rt;
  caf::actor root;
  std::string root_name;
  caf::actor writer;
  /// Set when the node begins to stop: a send waiting for room gives up.
  std::atomic<bool> stopping{false};
  /// Keeps the counted shed letters of each second (dead_letter_log::sweep).
  caf::actor sweeper;
  std::vector<std::string> orphans;
  std::vector<quarantined> bad;
  std::shared_ptr<const resilience::clock> clock_view;
  /// The tree answered its start and has not been stopped (/readyz).
  std::atomic<bool> started{false};
  /// The metrics endpoint (cfg.metrics); before `sys` ends.
  std::unique_ptr<detail::node_watch> watch;

  /// Why the node is not ready, or empty (/readyz).
  std::string not_ready() {
    if (!started.load())
      return "the tree is not started";
    if (stopping.load())
      return "the node is stopping";
    if (auto n = rt->meters().escalating.load(); n > 0)
      return std::to_string(n) + " supervisor(s) escalating";
    return {};
  }

  /// Declares the configured tools on the runtime, each with its executor,
  /// and its breaker as the data dir last kept it. Errors name the tool and
  /// the field.
  caf::error setup_tools() {
    auto& decls = cfg_copy.tools; // a copy: normalized below
    std::set<std::string> seen;
    std::string problems;
    auto add = [&](const std::string& tool, const std::string& what) {
      problems += (problems.empty() ? "" : "; ") + ("tool \"" + tool + "\": ")
                  + what;
    };
    for (auto& d : decls) {
      // An irreversible tool is never retried: in C++ it need not say so
      // (a policy file that asks for more attempts is refused there).
      if (d.effect == side_effect::irreversible)
        d.policy.retry.max_attempts = 1;
      for (auto& p : check_tool(d))
        add(d.name, p.field + ": " + p.what);
      if (!seen.insert(d.name).second)
        add(d.name, "declared twice");
      auto type = d.type.empty() ? d.name : d.type;
      if (!d.impl && rt->types().find_tool(type) == nullptr) {
        std::string known;
        for (auto& x : rt->types().tool_names())
          known += (known.empty() ? "" : ", ") + x;
        add(d.name, "no tool implementation is registered as \"" + type
                      + "\" (registry::add_tool; registered: "
                      + (known.empty() ? "none" : known) + ")");
      }
    }
    if (problems.empty())
      check_tool_links(decls, add);
    if (!problems.empty())
      return make_error(errc::invalid_child_spec, problems);
    clock_view = std::make_shared<detail::actor_clock_view>(sys.clock());
    for (auto& d : decls) {
      auto type = d.type.empty() ? d.name : d.type;
      std::shared_ptr<tool_executor> ex;
      if (cfg_copy.tool_executors)
        ex = cfg_copy.tool_executors(d);
      auto& impl = d.impl ? *d.impl : *rt->types().find_tool(type);
      auto t = std::make_shared<detail::tool_runtime>(d, impl, clock_view,
                                                      std::move(ex));
      if (auto& st = rt->storage())
        restore_breaker(*st, *t);
      if (writer)
        t->on_breaker_change(
          [w = writer, name = d.name](const resilience::breaker_snapshot& s) {
            records::BreakerState r;
            r.set_tool(name);
            r.set_state(static_cast<uint32_t>(s.state));
            auto now = detail::unix_ms();
            r.set_updated_unix_ms(now);
            r.set_open_until_unix_ms(
              now
              + std::chrono::duration_cast<std::chrono::milliseconds>(
                  s.open_remaining)
                  .count());
            r.set_trips(s.trips);
            write_item item;
            item.muts.push_back(
              detail::put_record(db::meta, breaker_key(name), r));
            caf::anon_send(w, write_atom::value, uint64_t{0},
                           owned_write{owner_ref{}, std::move(item)});
          });
      rt->add_tool(std::move(t));
    }
    return caf::none;
  }

  /// The tools a declaration names (its fallbacks, its dry-run form) are
  /// declared, and take its request (and, a fallback, give its reply); its
  /// default reply is of its reply type; approvals need a data dir.
  template <class Add>
  void check_tool_links(const std::vector<tool_decl>& decls, Add& add) {
    auto impl_of = [&](const std::string& name) -> const tool_type* {
      for (auto& d : decls)
        if (d.name == name)
          return d.impl ? d.impl.get()
                        : rt->types().find_tool(d.type.empty() ? d.name
                                                               : d.type);
      return nullptr;
    };
    for (auto& d : decls) {
      auto* self = impl_of(d.name);
      auto linked = [&](const std::string& other, const char* field,
                        bool same_reply) {
        auto* x = impl_of(other);
        if (x == nullptr)
          return add(d.name, std::string{field} + ": \"" + other
                               + "\" is not a tool of this node");
        if (x->request_type != self->request_type
            || (same_reply && x->reply_type != self->reply_type))
          add(d.name, std::string{field} + ": \"" + other + "\" takes "
                        + x->request_type + " and replies " + x->reply_type
                        + "; it must take " + self->request_type
                        + (same_reply ? " and reply " + self->reply_type
                                      : std::string{}));
      };
      for (auto& f : d.fallback.tools) {
        linked(f, "fallback.tools", true);
        // A fallback runs under the call's guards (its dry run and
        // approval), below them: its own would be skipped.
        for (auto& x : decls)
          if (x.name == f && (x.dry_run.required || x.approval.required))
            add(d.name, "fallback.tools: \"" + x.name
                          + "\" has a dry run or an approval of its own, "
                            "which it would skip as a fallback (a fallback "
                            "runs under the calling tool's); declare them "
                            "on \"" + d.name + "\"");
      }
      if (!d.dry_run.tool.empty()) {
        linked(d.dry_run.tool, "dry_run.tool", false);
        for (auto& x : decls)
          if (x.name == d.dry_run.tool
              && (x.dry_run.required || x.approval.required))
            add(d.name, "dry_run.tool: \"" + x.name
                          + "\" has a dry run or an approval of its own; a "
                            "dry run must be a plain call");
      }
      if (!d.fallback.default_type.empty()) {
        auto* m = google::protobuf::DescriptorPool::generated_pool()
                    ->FindMessageTypeByName(self->reply_type);
        auto* proto = m != nullptr ? google::protobuf::MessageFactory::
                                       generated_factory()
                                         ->GetPrototype(m)
                                   : nullptr;
        std::unique_ptr<google::protobuf::Message> x{
          proto != nullptr ? proto->New() : nullptr};
        if (d.fallback.default_type != self->reply_type)
          add(d.name, "fallback.default: a " + d.fallback.default_type
                        + "; the tool replies " + self->reply_type);
        else if (!x || !x->ParseFromString(d.fallback.default_payload))
          add(d.name, "fallback.default: does not parse as "
                        + self->reply_type);
      }
      if (d.approval.required && cfg_copy.data_dir.empty())
        add(d.name, "approval.required: a call's approval is kept on disk; "
                    "give the node a data dir (node_config::data_dir)");
    }
  }

  static std::string breaker_key(const std::string& tool) {
    return "breaker/" + tool;
  }

  /// A breaker that was open when the node stopped stays open for the
  /// rest of its period (on the wall clock), so that the first call after
  /// a restart is a probe at the earliest.
  void restore_breaker(store& st, detail::tool_runtime& t) {
    std::string raw;
    bool found = false;
    if (auto s = st.get(db::meta, breaker_key(t.decl().name), raw, found);
        s || !found)
      return;
    records::BreakerState r;
    if (auto f = decode_record(raw, r); f != record_fault::none) {
      detail::log().warn("vigil: {} [meta] \"{}\": {}; the breaker of tool {} "
                         "starts closed",
                         cfg_copy.data_dir, breaker_key(t.decl().name),
                         describe(f, raw, r), t.decl().name);
      return;
    }
    resilience::breaker_snapshot snap;
    snap.trips = r.trips();
    if (r.state() == 0) {
      snap.state = resilience::breaker_state::closed;
    } else {
      snap.state = resilience::breaker_state::open;
      // Clamped to what the policy allows: a clock that was wrong when
      // the record was written, or a damaged one, must not keep the tool
      // refused for longer.
      auto& b = t.decl().policy.breaker;
      auto cap = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::max(b.max_open_for, b.open_for))
                   .count();
      auto until = r.open_until_unix_ms();
      auto now = detail::unix_ms();
      int64_t left = until <= now ? 0 : until - now > cap ? cap : until - now;
      if (until > now && until - now > cap)
        detail::log().warn(
          "vigil: {} [meta] \"{}\": the breaker of tool {} was "
          "kept open until {} ms from now, beyond its policy's "
          "{} ms; it stays open {} ms",
          cfg_copy.data_dir, breaker_key(t.decl().name), t.decl().name,
          until - now, cap, cap);
      snap.open_remaining = std::chrono::milliseconds{left};
    }
    t.restore(snap);
    if (snap.state != resilience::breaker_state::closed)
      detail::log().info("vigil: tool {}: its breaker was open when the node "
                         "stopped; it stays open {} ms more",
                         t.decl().name,
                         std::chrono::duration_cast<std::chrono::milliseconds>(
                           snap.open_remaining)
                           .count());
  }

  caf::error open_store() {
    store_options so;
    so.dir = cfg_copy.data_dir;
    so.sync = cfg_copy.sync;
    so.map_size = cfg_copy.map_size;
    so.max_map_size = cfg_copy.max_map_size;
    so.kv_history = cfg_copy.kv_history;
    so.wall_ms = cfg_copy.wall_ms;
    so.verify = cfg_copy.verify_data_dir;
    std::unique_ptr<store> st;
    if (auto s = store::open(so, st))
      return make_error(errc::storage_failed, s.message());
    for (auto& note : st->open_notes()) {
      if (note.find(": verified ") != std::string::npos
          && note.find("fail their checksum") == std::string::npos)
        detail::log().info("vigil: {}", note);
      else
        detail::log().warn("vigil: {}", note);
    }
    if (st->upgraded_from() != 0)
      detail::log().info(
        "vigil: {}",
        upgrade_line(so.dir, {st->upgraded_from(), st->upgraded_records()}));
    std::map<std::string, recovered_agent> found;
    if (auto s = st->recover(found, bad))
      return make_error(errc::storage_failed, s.message());
    for (auto& q : bad) {
      detail::log().warn("vigil: {}: quarantined a corrupt record of {} [{}] "
                         "key \"{}\": {}; it is in the dead letters now",
                         so.dir, q.path.empty() ? "an unknown agent" : q.path,
                         to_string(q.where), printable_key(q.key), q.reason);
      dead_letter_of(q);
    }
    // Decisions dropped while no node ran, before any agent asks again.
    std::vector<std::string> taken;
    auto taken_st = take_decisions(*st, taken);
    for (auto& line : taken)
      detail::log().info("vigil: approvals: {}", line);
    if (taken_st)
      detail::log().error("vigil: approvals: {}; the node takes the decision "
                          "files in again every {} ms",
                          taken_st.message(), cfg_copy.approvals_poll.count());
    std::shared_ptr<store> shared{std::move(st)};
    writer = spawn_writer(sys, shared, cfg_copy.writer, std::move(found),
                          rt->shared_stats());
    rt->attach_store(shared, writer);
    rt->approvals().attach(sys, shared, writer, cfg_copy.approvals_poll);
    return caf::none;
  }

  void dead_letter_of(const quarantined& q) {
    envelope e;
    // Addressed to the agent whose record it was, as its LMDB copy is;
    // the database name when the key does not say.
    rt->add_dead_letter(q.path.empty() ? std::string{to_string(q.where)}
                                       : q.path,
                        std::move(e),
                        "quarantined: " + q.reason, false);
  }

  /// Paths recovered at start that no cell took; the writer drops their
  /// cached records.
  std::vector<std::string> unclaimed() {
    std::vector<std::string> out;
    if (!writer)
      return out;
    caf::scoped_actor self{sys, true};
    self->request(writer, caf::infinite, orphans_atom::value)
      .receive([&](std::vector<std::string>& xs) { out = std::move(xs); },
               [](caf::error&) {});
    return out;
  }

  /// Sweeps the dead letters every second (not on the testing scheduler,
  /// whose tests move time themselves).
  void start_sweeper() {
    if (sweeper || cfg_copy.scheduler_policy == "testing")
      return;
    sweeper = sys.spawn([r = rt](caf::event_based_actor* self) {
      self->delayed_send(self, std::chrono::seconds{1}, sweep_atom::value);
      return caf::behavior{
        [=](sweep_atom) {
          r->dead_log().sweep();
          self->delayed_send(self, std::chrono::seconds{1},
                             sweep_atom::value);
        },
      };
    });
  }

  void stop_sweeper() {
    if (sweeper)
      caf::anon_send_exit(sweeper, caf::exit_reason::user_shutdown);
    sweeper = nullptr;
  }

  void stop_writer() {
    if (!writer)
      return;
    // Letters counted under the rate limit are written before the writer
    // flushes (sent from this thread first, so they are ahead of it).
    rt->dead_log().flush();
    caf::scoped_actor self{sys, true};
    self->request(writer, caf::infinite, flush_atom::value)
      .receive([] {}, [](caf::error&) {});
    self->send_exit(writer, caf::exit_reason::user_shutdown);
    writer = nullptr;
  }
  std::mutex mtx;
  std::condition_variable cv;
  bool exited = false;
  caf::error exit_reason;
  /// Counts the roots started: the exit hook of an earlier one (a start
  /// that failed, whose tree ends later) leaves the current one's state.
  uint64_t root_gen = 0;

  caf::expected<caf::actor> sup(std::string_view path) {
    auto h = rt->lookup(path.empty() ? root_name : path);
    if (!h)
      return make_error(errc::not_found, std::string{path});
    return h;
  }

  template <class T, class... Ts>
  caf::expected<T> ask(std::string_view path, Ts&&... xs) {
    return ask_within<T>(caf::infinite, path, std::forward<Ts>(xs)...);
  }

  /// A query that must not block its caller for ever (a supervisor inside a
  /// long `await`, e.g. stopping a stuck child, answers late).
  template <class T, class... Ts>
  caf::expected<T> ask_within(caf::duration timeout, std::string_view path,
                              Ts&&... xs) {
    auto h = sup(path);
    if (!h)
      return std::move(h.error());
    caf::scoped_actor self{sys};
    caf::expected<T> out{make_error(errc::not_found)};
    self->request(*h, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); },
               [&](caf::error& err) {
                 if (err == caf::sec::request_timeout)
                   out = make_error(errc::deadline_exceeded,
                                    std::string{path} + " did not answer");
                 else
                   out = std::move(err);
               });
    return out;
  }

  template <class... Ts>
  caf::error ask_void(std::string_view path, Ts&&... xs) {
    auto h = sup(path);
    if (!h)
      return std::move(h.error());
    caf::scoped_actor self{sys};
    caf::error out;
    self->request(*h, caf::infinite, std::forward<Ts>(xs)...)
      .receive([&]() {}, [&](caf::error& err) { out = std::move(err); });
    return out;
  }
};

namespace {

void protobuf_to_spdlog(int level, const std::string& line) {
  if (level >= google::protobuf::LOGLEVEL_ERROR)
    detail::log().error("vigil: protobuf: {}", line);
  else
    detail::log().warn("vigil: protobuf: {}", line);
}

} // namespace

node::node(registry types, node_config cfg)
  : impl_(std::make_unique<impl>(std::move(types), cfg)) {
  link_own_schemas();
  if (impl_->cfg_copy.log)
    apply_log_settings(*impl_->cfg_copy.log);
  if (!impl_->cfg_copy.metrics.empty())
    impl_->rt->meters().enable(); // before any cell is made
  route_protobuf_log(protobuf_to_spdlog);
  // A write past the file size limit (ulimit -f) then fails with EFBIG,
  // which the store reports, instead of killing the process.
  struct sigaction old;
  if (::sigaction(SIGXFSZ, nullptr, &old) == 0 && old.sa_handler == SIG_DFL)
    ::signal(SIGXFSZ, SIG_IGN);
}

node::~node() {
  stop();
  impl_->watch.reset();
  impl_->stop_sweeper();
  impl_->rt->approvals().detach();
  impl_->stop_writer();
}

caf::error node::start(std::string name, supervisor_spec spec) {
  if (impl_->root)
    return make_error(errc::running, impl_->root_name);
  impl_->root_name = name;
  impl_->stopping = false;
  if (!impl_->cfg_copy.data_dir.empty() && !impl_->writer)
    if (auto err = impl_->open_store())
      return err;
  if (impl_->rt->tools().empty())
    if (auto err = impl_->setup_tools())
      return err;
  impl_->start_sweeper();
  if (!impl_->cfg_copy.metrics.empty() && !impl_->watch) {
    auto* st = impl_.get();
    if (auto err = detail::node_watch::start(
          impl_->sys, impl_->rt, impl_->cfg_copy.metrics,
          [st] { return st->not_ready(); }, impl_->watch))
      return err;
    detail::log().debug("vigil: metrics on http://{}/metrics (also /healthz, "
                       "/readyz)",
                       impl_->watch->endpoint().address());
  }
  auto root = spawn_supervisor(impl_->sys, impl_->rt, std::move(spec), name);
  auto* st = impl_.get();
  uint64_t gen = 0;
  {
    std::lock_guard<std::mutex> guard{st->mtx};
    gen = ++st->root_gen;
    st->exited = false;
    st->exit_reason = caf::error{};
  }
  root->attach_functor([st, gen](const caf::error& reason) {
    std::lock_guard<std::mutex> guard{st->mtx};
    if (st->root_gen != gen)
      return; // an earlier root, whose start failed, ended late
    st->stopping = true; // sends waiting for room give up (take_place)
    st->exited = true;
    st->exit_reason = reason;
    st->cv.notify_all();
  });
  caf::scoped_actor self{impl_->sys};
  caf::error out;
  self->request(root, caf::infinite, start_cmd{})
    .receive([](uint64_t) {}, [&](caf::error& err) { out = std::move(err); });
  if (out) {
    // Nothing runs: the endpoint does not keep the port of a node that
    // did not start. (The failed root ends on its own; see root_gen.)
    impl_->watch.reset();
    std::lock_guard<std::mutex> guard{st->mtx};
    ++st->root_gen;
  }
  if (!out) {
    impl_->root = root;
    impl_->started = true;
    impl_->orphans = impl_->unclaimed();
    for (auto& p : impl_->orphans)
      detail::log().warn(
        "vigil: {} holds durable agent {}, which is not in the "
        "tree; its records are kept (see vigil inspect)",
        impl_->cfg_copy.data_dir, p);
  }
  return out;
}

namespace {

/// Takes a place for `e` in the queue of the cell at `path` (`b`, as
/// looked up; if it keeps a count): at once, or under overflow `wait` by
/// waiting for room until `until` (this is a caller's thread, which can
/// wait), looking the path up again each time, so that a replaced cell's
/// successor takes it (also after a moment with no cell at the path). On
/// success `b` is the cell to send to. Errors: `overloaded` naming `path`
/// if no room came; `not_running` if the node stops or its root ends
/// meanwhile, if no cell ran at the path for `replace_grace` (the child was
/// terminated or deleted), or if none ran there when the wait ended.
caf::error take_place(const runtime& rt, const std::atomic<bool>& stopping,
                      detail::bound& b, envelope& e, std::string_view path,
                      std::chrono::steady_clock::time_point until) {
  // A supervisor replaces a cell at once (a restart of its own); a path
  // empty for longer has lost its child.
  constexpr auto replace_grace = std::chrono::seconds{1};
  auto pause = std::chrono::microseconds{50};
  // (a sentinel, not an optional: GCC 12 warns it may be read unset)
  auto none = std::chrono::steady_clock::time_point::min();
  auto gone_since = none;
  for (bool first = true;; first = false) {
    // After a wait, the path may have no live cell for a moment (it is
    // being replaced) or for good (the node stops, the child is deleted).
    bool gone = !first
                && (!b.actor
                    || caf::actor_cast<caf::abstract_actor*>(b.actor)->getf(
                      caf::abstract_actor::is_terminated_flag));
    if (gone) {
      if (stopping.load())
        return make_error(errc::not_running,
                          std::string{path}
                            + " stopped while the send waited for room");
      auto now = std::chrono::steady_clock::now();
      if (gone_since == none)
        gone_since = now;
      else if (now - gone_since >= replace_grace)
        return make_error(errc::not_running,
                          std::string{path}
                            + " has had no running agent for 1 s while the "
                              "send waited for room (terminated or deleted)");
    } else {
      gone_since = none;
      if (b.gauge == nullptr)
        return caf::none;
      if (b.gauge->try_enter()) {
        e.flags |= envelope::queued_flag;
        return caf::none;
      }
      if (b.gauge->policy != overflow_policy::wait) {
        b.gauge->shed.fetch_add(1, std::memory_order_relaxed);
        return make_error(errc::overloaded,
                          std::string{path} + " has "
                            + std::to_string(b.gauge->cap)
                            + " envelopes queued (its queue_cap)");
      }
    }
    if (std::chrono::steady_clock::now() + pause > until) {
      if (gone)
        return make_error(errc::not_running,
                          std::string{path}
                            + " had no running agent when the wait ended");
      b.gauge->shed.fetch_add(1, std::memory_order_relaxed);
      return make_error(errc::overloaded,
                        std::string{path} + " has "
                          + std::to_string(b.gauge->cap)
                          + " envelopes queued (its queue_cap)");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2,
                                                std::chrono::milliseconds{5});
    b = rt.lookup_bound(path);
  }
}

} // namespace

caf::expected<envelope>
node::call_envelope(std::string_view path,
                    const google::protobuf::Message& req, duration timeout) {
  auto dest = impl_->rt->lookup_bound(path);
  if (!dest.actor)
    return make_error(errc::not_found, "no agent at " + std::string{path});
  envelope e;
  e.type = type_symbol(req);
  req.SerializeToString(&e.payload);
  impl_->rt->stamp(e, 0, 0, nullptr);
  e.deadline = to_ns(impl_->sys.clock().now() + timeout);
  auto t0 = std::chrono::steady_clock::now();
  if (auto err = take_place(*impl_->rt, impl_->stopping, dest, e, path,
                            t0 + timeout))
    return err;
  timeout -= std::chrono::duration_cast<duration>(
    std::chrono::steady_clock::now() - t0);
  if (timeout.count() <= 0)
    timeout = duration{1};
  caf::scoped_actor self{impl_->sys};
  caf::expected<envelope> out{make_error(errc::not_found)};
  self->request(dest.actor, caf::duration{timeout}, std::move(e))
    .receive([&](envelope& rep) { out = std::move(rep); },
             [&](caf::error& err) {
               if (err == caf::sec::request_timeout)
                 out = make_error(errc::deadline_exceeded,
                                  std::string{path} + " did not reply in time");
               else if (err == caf::sec::request_receiver_down)
                 out = make_error(errc::not_running, std::string{path});
               else
                 out = std::move(err);
             });
  return out;
}

caf::error node::send(std::string_view path,
                      const google::protobuf::Message& msg,
                      const call_options& opts) {
  auto dest = impl_->rt->lookup_bound(path);
  if (!dest.actor)
    return make_error(errc::not_found, "no agent at " + std::string{path});
  envelope e;
  e.type = type_symbol(msg);
  msg.SerializeToString(&e.payload);
  impl_->rt->stamp(e, opts.message_id, opts.message_origin, nullptr);
  e.attempt_budget = opts.attempt_budget;
  e.idempotency_key = opts.idempotency_key;
  if (opts.timeout.count() > 0)
    e.deadline = to_ns(impl_->sys.clock().now() + opts.timeout);
  auto wait = opts.timeout.count() > 0 ? opts.timeout : send_wait;
  if (auto err = take_place(*impl_->rt, impl_->stopping, dest, e, path,
                            std::chrono::steady_clock::now() + wait))
    return err;
  caf::anon_send(dest.actor, std::move(e));
  return caf::none;
}

caf::expected<child_info> node::start_child(std::string_view sup,
                                            child_spec cs) {
  return impl_->ask<child_info>(sup, start_child_atom::value, std::move(cs));
}

caf::expected<child_info> node::start_child(std::string_view sup,
                                            params extra, std::string name) {
  return impl_->ask<child_info>(sup, start_child_atom::value,
                                std::move(extra), std::move(name));
}

caf::error node::terminate_child(std::string_view sup, std::string id) {
  return impl_->ask_void(sup, terminate_child_atom::value, std::move(id));
}

caf::expected<child_info> node::restart_child(std::string_view sup,
                                              std::string id) {
  return impl_->ask<child_info>(sup, restart_child_atom::value,
                                std::move(id));
}

caf::error node::delete_child(std::string_view sup, std::string id) {
  return impl_->ask_void(sup, delete_child_atom::value, std::move(id));
}

caf::expected<std::vector<child_info>>
node::which_children(std::string_view sup) {
  return impl_->ask_within<std::vector<child_info>>(query_timeout, sup,
                                             which_children_atom::value);
}

caf::expected<child_counts> node::count_children(std::string_view sup) {
  return impl_->ask_within<child_counts>(query_timeout, sup,
                                         count_children_atom::value);
}

std::vector<std::string> node::orphans() const {
  return impl_->orphans;
}

std::vector<quarantined> node::quarantine() const {
  return impl_->bad;
}

caf::expected<std::vector<uint64_t>> node::writer_stats() {
  if (!impl_->writer)
    return make_error(errc::not_found, "this node has no data dir");
  caf::scoped_actor self{impl_->sys, true};
  caf::expected<std::vector<uint64_t>> out{make_error(errc::not_found)};
  self->request(impl_->writer, caf::infinite, stats_atom::value)
    .receive(
      [&](uint64_t items, uint64_t commits, uint64_t failures,
          uint64_t largest, uint64_t compacted, uint64_t compact_failures,
          uint64_t passes, uint64_t owners, uint64_t refused) {
        out = std::vector<uint64_t>{items,   commits,   failures,
                                    largest, compacted, compact_failures,
                                    passes,  owners,    refused};
      },
      [&](caf::error& err) { out = std::move(err); });
  return out;
}

std::vector<dead_letter> node::dead_letters() const {
  return impl_->rt->dead_letters();
}

bool node::wait_for_exit(duration timeout, caf::error& reason) {
  std::unique_lock<std::mutex> guard{impl_->mtx};
  if (!impl_->cv.wait_for(guard, timeout, [&] { return impl_->exited; }))
    return false;
  reason = impl_->exit_reason;
  return true;
}

std::string node::metrics_address() const {
  return impl_->watch ? impl_->watch->endpoint().address() : std::string{};
}

caf::error node::stop() {
  impl_->started = false;
  if (!impl_->root)
    return caf::none;
  impl_->stopping = true;
  auto root = std::move(impl_->root);
  bool exited = false;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    exited = impl_->exited;
  }
  if (!exited) {
    caf::scoped_actor self{impl_->sys};
    self->request(root, caf::infinite, stop_cmd{})
      .receive([] {}, [](caf::error&) {});
  }
  // The shed letters counted under the rate limit become letters now, not
  // at the next sweep (and, with a data dir, go to the writer ahead of its
  // last flush).
  impl_->rt->dead_log().flush();
  std::lock_guard<std::mutex> guard{impl_->mtx};
  if (exited)
    return impl_->exit_reason;
  return impl_->exited && impl_->exit_reason != caf::exit_reason::user_shutdown
           ? impl_->exit_reason
           : caf::error{};
}

const std::shared_ptr<runtime>& node::rt() const noexcept {
  return impl_->rt;
}

caf::actor_system& node::system() noexcept {
  return impl_->sys;
}

} // namespace vigil
