// vigil::local_directory on its own: bind, unbind, lookup, the bindings
// that handles cache, sorted paths, and a runtime that takes an injected
// directory. Real CAF actors stand in for cells.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "vigil/actors/local_directory.hpp"
#include "vigil/actors/runtime.hpp"

using namespace vigil;

namespace {

class local_directory_test : public ::testing::Test {
public:
  local_directory_test() : sys(cfg) {
    a = idle();
    b = idle();
  }

  ~local_directory_test() override {
    for (auto& x : spawned)
      caf::anon_send_exit(x, caf::exit_reason::kill);
  }

  /// An actor that does nothing; stands in for a cell.
  caf::actor idle() {
    auto x = sys.spawn([]() -> caf::behavior { return {[](int) {}}; });
    spawned.push_back(x);
    return x;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::vector<caf::actor> spawned;
  caf::actor a;
  caf::actor b;
  local_directory dir;
};

TEST_F(local_directory_test, an_empty_directory_finds_nothing) {
  EXPECT_FALSE(dir.lookup("x"));
  EXPECT_EQ(dir.binding_of("x"), nullptr);
  EXPECT_TRUE(dir.paths().empty());
}

TEST_F(local_directory_test, lookup_finds_the_bound_path_only) {
  dir.bind("root/a", a);
  EXPECT_EQ(dir.lookup("root/a"), a);
  EXPECT_FALSE(dir.lookup("root")) << "a prefix is not a path";
  EXPECT_FALSE(dir.lookup("root/a/b"));
  EXPECT_FALSE(dir.lookup("root/b"));
}

TEST_F(local_directory_test, paths_are_sorted) {
  dir.bind("root/b", a);
  dir.bind("root", b);
  dir.bind("root/a/x", a);
  dir.bind("root/a", b);
  EXPECT_EQ(dir.paths(), (std::vector<std::string>{"root", "root/a",
                                                   "root/a/x", "root/b"}));
}

TEST_F(local_directory_test, a_binding_is_shared_until_it_is_replaced) {
  dir.bind("p", a);
  auto first = dir.binding_of("p");
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->actor, a);
  EXPECT_TRUE(first->live.load());
  EXPECT_EQ(dir.binding_of("p"), first) << "one binding per bound cell";
  dir.bind("p", b);
  EXPECT_FALSE(first->live.load()) << "a handle must see the replacement";
  auto second = dir.binding_of("p");
  ASSERT_NE(second, nullptr);
  EXPECT_NE(second, first);
  EXPECT_EQ(second->actor, b);
  EXPECT_TRUE(second->live.load());
  EXPECT_EQ(dir.lookup("p"), b);
}

TEST_F(local_directory_test, rebinding_the_same_cell_kills_the_old_binding) {
  // As before the split: every bind retires the cached binding.
  dir.bind("p", a);
  auto first = dir.binding_of("p");
  dir.bind("p", a);
  EXPECT_FALSE(first->live.load());
  EXPECT_TRUE(dir.binding_of("p")->live.load());
}

TEST_F(local_directory_test, unbind_of_a_replaced_cell_keeps_the_new_one) {
  dir.bind("p", a);
  dir.bind("p", b);
  auto live = dir.binding_of("p");
  dir.unbind("p", a); // a late unbind of the cell that was replaced
  EXPECT_EQ(dir.lookup("p"), b);
  EXPECT_TRUE(live->live.load());
  EXPECT_EQ(dir.binding_of("p"), live);
  EXPECT_EQ(dir.paths(), std::vector<std::string>{"p"});
}

TEST_F(local_directory_test, unbind_removes_the_path_and_kills_its_binding) {
  dir.bind("p", a);
  dir.bind("q", b);
  auto h = dir.binding_of("p");
  dir.unbind("p", a);
  EXPECT_FALSE(h->live.load());
  EXPECT_FALSE(dir.lookup("p"));
  EXPECT_EQ(dir.binding_of("p"), nullptr);
  EXPECT_EQ(dir.paths(), std::vector<std::string>{"q"});
  dir.unbind("p", a); // twice: nothing left to do
  EXPECT_EQ(dir.lookup("q"), b);
}

TEST_F(local_directory_test, unbind_without_a_resolved_binding) {
  dir.bind("p", a);
  dir.unbind("p", a);
  EXPECT_FALSE(dir.lookup("p"));
  EXPECT_TRUE(dir.paths().empty());
}

// Resolvers racing a rebinding path: every lookup sees one of the two cells,
// and every binding handed out is either live and current or was killed.
TEST_F(local_directory_test, concurrent_rebinds_and_resolves) {
  dir.bind("p", a);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&] {
      while (!stop.load()) {
        auto x = dir.lookup("p");
        if (x != a && x != b)
          ++bad;
        auto h = dir.binding_of("p");
        if (h == nullptr || (h->actor != a && h->actor != b))
          ++bad;
      }
    });
  for (int i = 0; i < 20000; ++i)
    dir.bind("p", i % 2 == 0 ? b : a);
  stop = true;
  for (auto& t : readers)
    t.join();
  EXPECT_EQ(bad.load(), 0);
  auto h = dir.binding_of("p");
  EXPECT_TRUE(h->live.load());
  EXPECT_EQ(h->actor, a); // the last bind (i = 19999)
}

/// A directory that counts its calls and delegates to a local one.
class counting_directory : public directory {
public:
  void bind(const std::string& p, caf::actor c,
            detail::queue_gauge* g = nullptr) override {
    ++binds;
    inner.bind(p, std::move(c), g);
  }
  void unbind(const std::string& p, const caf::actor& c) override {
    ++unbinds;
    inner.unbind(p, c);
  }
  caf::actor lookup(std::string_view p) const override {
    ++lookups;
    return inner.lookup(p);
  }
  detail::bound lookup_bound(std::string_view p) const override {
    ++lookups;
    return inner.lookup_bound(p);
  }
  std::shared_ptr<const detail::binding>
  binding_of(std::string_view p) const override {
    ++resolves;
    return inner.binding_of(p);
  }
  std::vector<std::string> paths() const override {
    return inner.paths();
  }
  local_directory inner;
  int binds = 0;
  int unbinds = 0;
  mutable int lookups = 0;
  mutable int resolves = 0;
};

TEST_F(local_directory_test, the_runtime_uses_an_injected_directory) {
  auto owned = std::make_unique<counting_directory>();
  auto* dir = owned.get();
  runtime rt{registry{}, runtime::default_dead_letter_cap, std::move(owned)};
  EXPECT_EQ(&rt.dir(), dir);
  rt.bind("p", a);
  EXPECT_EQ(rt.lookup("p"), a);
  EXPECT_NE(rt.binding_of("p"), nullptr);
  EXPECT_EQ(rt.paths(), std::vector<std::string>{"p"});
  rt.unbind("p", a);
  EXPECT_EQ(dir->binds, 1);
  EXPECT_EQ(dir->unbinds, 1);
  EXPECT_EQ(dir->lookups, 1);
  EXPECT_EQ(dir->resolves, 1);
  EXPECT_TRUE(dir->inner.paths().empty());
}

TEST_F(local_directory_test, the_runtime_defaults_to_a_local_directory) {
  runtime rt{registry{}};
  EXPECT_NE(dynamic_cast<local_directory*>(&rt.dir()), nullptr);
}

} // namespace
