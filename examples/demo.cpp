// vigil's main demo: a supervision tree loses children and recovers.
//
//   invoices (one_for_one, 3 restarts in 5 s)
//   ├─ ocr        permanent; crashes on a scan named "crash"
//   ├─ enricher   on_failure: degrade; always crashes, so a stand-in answers
//   └─ payments   nested supervisor (rest_for_one): ledger, notifier
//                 (ledger is durable: a journal agent in LMDB)
//
//   demo [DATA_DIR]   (default: ./vigil-data)
//
// Exits 0 only if every recovery it shows really happened, including the
// ledger resuming its count from LMDB in a second node on the same data dir.
#include <iostream>
#include <thread>

#include "ocr.pb.h"
#include "vigil/node/node.hpp"

using namespace std::chrono_literals;
using examples::Scan, examples::Text, examples::Stats;

namespace {

class ocr : public vigil::agent<Stats> {
public:
  static void define(vigil::handlers<ocr>& h) { h.on<Scan>(&ocr::read); }
  void on_start(vigil::context& ctx) override {
    std::cout << "  [" << ctx.path() << "] started\n";
  }
  void on_restart(vigil::context& ctx, const caf::error& why) override {
    std::cout << "  [" << ctx.path() << "] restarted after: "
              << vigil::describe(why) << "\n";
  }
  void on_stop(vigil::context& ctx) override {
    std::cout << "  [" << ctx.path() << "] stopped\n";
  }
  Text read(vigil::context& ctx, const Scan& s) {
    if (s.document() == "crash")
      throw std::runtime_error("corrupt scan " + s.document());
    state().set_pages(state().pages() + 1);
    Text t;
    t.set_text(ctx.path() + " read " + s.document());
    t.set_pages(state().pages());
    return t;
  }
};

class enricher : public vigil::agent<> {
public:
  static void define(vigil::handlers<enricher>& h) {
    h.on<Scan>(&enricher::enrich);
  }
  Text enrich(vigil::context&, const Scan&) {
    throw std::runtime_error("vendor API timeout");
  }
};

/// Polls `pred` every 5 ms for up to 5 s; a bounded wait for a condition.
template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 1000; ++i, std::this_thread::sleep_for(5ms))
    if (pred())
      return true;
  return false;
}

void print_tree(vigil::node& n, const std::string& sup, int depth = 1) {
  auto kids = n.which_children(sup);
  if (!kids)
    return;
  for (auto& c : *kids) {
    std::cout << std::string(depth * 2, ' ') << c.path << "  " << c.status
              << "  restarts=" << c.restarts << "\n";
    if (c.kind == vigil::child_kind::supervisor)
      print_tree(n, c.path, depth + 1);
  }
}

uint64_t restarts_of(vigil::node& n, const std::string& sup,
                     const std::string& id) {
  if (auto kids = n.which_children(sup))
    for (auto& c : *kids)
      if (c.id == id)
        return c.restarts;
  return 0;
}

Scan scan(const std::string& doc) {
  Scan s;
  s.set_document(doc);
  return s;
}

} // namespace

int main(int argc, char** argv) {
  vigil::registry types;
  types.add<ocr>("ocr").add<enricher>("enricher");
  vigil::node_config nc;
  nc.data_dir = argc > 1 ? argv[1] : "vigil-data";
  auto node_ptr = std::make_unique<vigil::node>(types, nc);
  auto& node = *node_ptr;

  vigil::supervisor_spec payments;
  payments.flags.strategy = vigil::strategy::rest_for_one;
  payments.children = {vigil::worker("ledger", "ocr")
                         .with_durability(vigil::durability_mode::journal),
                       vigil::worker("notifier", "ocr")};
  vigil::supervisor_spec tree;
  tree.flags.intensity = 3;
  tree.flags.backoff.min = 50ms; // restarts wait: 50 ms, 100 ms, ...
  tree.flags.backoff.max = 400ms;
  auto enrich = vigil::worker("enricher", "enricher");
  enrich.failure = vigil::on_failure::degrade;
  Text fallback;
  fallback.set_text("enrichment unavailable");
  enrich.degrade.set_fallback(fallback);
  enrich.degrade.probe_min = 200ms;
  tree.children = {vigil::worker("ocr", "ocr"), enrich,
                   vigil::supervisor("payments", payments)};

  std::cout << "== starting the tree (data dir " << nc.data_dir << ")\n";
  if (auto err = node.start("invoices", tree)) {
    std::cerr << "start failed: " << vigil::describe(err) << "\n";
    return 1;
  }
  print_tree(node, "invoices");
  bool ok = true;

  std::cout << "\n== ocr crashes on a corrupt scan; its supervisor restarts it\n";
  auto bad = node.call<Text>("invoices/ocr", scan("crash"), 1s);
  std::cout << "  reply: " << (bad ? bad->value.text() : vigil::describe(bad.error())) << "\n";
  std::cout << "\n== requests sent while it restarts wait in its buffer\n";
  for (int i = 1; i <= 3; ++i) {
    auto r = node.call<Text>("invoices/ocr", scan("invoice-" + std::to_string(i)), 2s);
    std::cout << "  reply: " << (r ? r->value.text() + " (pages this instance: "
                                       + std::to_string(r->value.pages()) + ")"
                                   : vigil::describe(r.error())) << "\n";
    ok = ok && r && r->value.pages() == i;
  }
  ok = ok && restarts_of(node, "invoices", "ocr") == 1;

  std::cout << "\n== enricher keeps failing; once the budget is spent it is degraded\n";
  for (int i = 0; i < 4; ++i) {
    auto r = node.call<Text>("invoices/enricher", scan("x"), 2s);
    std::cout << "  reply: " << (r ? r->value.text() + (r->degraded ? "  [degraded]" : "")
                                   : vigil::describe(r.error())) << "\n";
  }
  ok = ok && eventually([&] {
    auto r = node.call<Text>("invoices/enricher", scan("x"), 2s);
    return r && r->degraded;
  });

  std::cout << "\n== the ledger is a journal agent: each entry is in LMDB "
               "before it is handled\n";
  int64_t ledger = 0;
  for (int i = 1; i <= 3; ++i) {
    auto r = node.call<Text>("invoices/payments/ledger",
                             scan("invoice-" + std::to_string(i)), 2s);
    std::cout << "  reply: " << (r ? r->value.text() + " (entries: "
                                       + std::to_string(r->value.pages()) + ")"
                                   : vigil::describe(r.error())) << "\n";
    ok = ok && r;
    if (r)
      ledger = r->value.pages();
  }

  std::cout << "\n== the tree after recovery\n";
  print_tree(node, "invoices");
  std::cout << "\n== dead letters: " << node.dead_letters().size() << "\n";
  for (auto& dl : node.dead_letters())
    std::cout << "  " << dl.path << ": " << dl.reason << "\n";

  std::cout << "\n== stopping in reverse start order\n";
  auto err = node.stop();
  ok = ok && !err;
  node_ptr.reset();

  std::cout << "\n== a new node on the same data dir: the ledger resumes\n";
  vigil::node again{types, nc};
  if (auto err = again.start("invoices", tree)) {
    std::cerr << "restart failed: " << vigil::describe(err) << "\n";
    return 1;
  }
  auto r = again.call<Text>("invoices/payments/ledger", scan("invoice-4"), 2s);
  std::cout << "  reply: " << (r ? r->value.text() + " (entries: "
                                     + std::to_string(r->value.pages()) + ")"
                                 : vigil::describe(r.error())) << "\n";
  ok = ok && r && r->value.pages() == ledger + 1;
  ok = ok && !again.stop();
  std::cout << (ok ? "\ndemo: OK, every recovery happened\n"
                   : "\ndemo: FAILED, a recovery did not happen\n");
  return ok ? 0 : 1;
}
