// The writer's ownership protocol on its own: fences and epochs, refused
// writes of a replaced owner, a failed commit that poisons one epoch, grants
// that wait for the path's writes, release, and the start's cached view.
// A real writer actor on a real LMDB data dir.

#include <gtest/gtest.h>

#include <chrono>

#include <caf/all.hpp>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

class writer_test : public ::testing::Test {
public:
  writer_test() : sys(cfg), self(sys, true) {
    store_options so;
    so.dir = dir.path();
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> s;
    auto status = store::open(so, s);
    EXPECT_FALSE(status) << status.message();
    st = std::move(s);
  }

  ~writer_test() override {
    if (w)
      caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
  }

  void spawn(writer_options opts = {},
             std::map<std::string, recovered_agent> found = {}) {
    w = spawn_writer(sys, st, opts, std::move(found));
  }

  caf::expected<fence_grant> fence(const std::string& path, uint64_t prev) {
    caf::expected<fence_grant> out{make_error(errc::not_found)};
    self->request(w, caf::infinite, fence_atom::value, path, prev)
      .receive([&](fence_grant& g) { out = std::move(g); },
               [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  /// A write that puts a snapshot of `path` holding `n` in its state.
  static write_item snapshot_of(const std::string& path, int n) {
    records::Snapshot s;
    s.set_format(store::format);
    s.set_path(path);
    s.set_state(std::string(static_cast<size_t>(n), 'x'));
    s.set_durability(2);
    mutation m;
    m.where = db::snapshots;
    m.key = path;
    encode_record(s, m.value);
    write_item item;
    item.muts.push_back(std::move(m));
    return item;
  }

  void write(const owner_ref& own, uint64_t token, write_item item) {
    self->send(w, write_atom::value, token, owned_write{own, std::move(item)});
  }

  struct ack {
    std::vector<uint64_t> tokens;
    caf::error err;
    bool arrived = false;
  };

  /// The next acknowledgement, or `arrived` false after `limit`.
  ack next_ack(std::chrono::milliseconds limit = 5000ms) {
    ack out;
    self->receive(
      [&](committed_atom, std::vector<uint64_t>& toks, caf::error& err) {
        out.tokens = std::move(toks);
        out.err = std::move(err);
        out.arrived = true;
      },
      caf::after(limit) >> [] {});
    return out;
  }

  uint64_t owners() {
    uint64_t out = ~uint64_t{0};
    self->request(w, caf::infinite, stats_atom::value)
      .receive(
        [&](uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
            uint64_t, uint64_t n, uint64_t) { out = n; },
        [](caf::error&) {});
    return out;
  }

  temp_dir dir;
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  std::shared_ptr<store> st;
  caf::actor w;
};

TEST_F(writer_test, each_fence_takes_a_newer_epoch_and_reads_the_disk) {
  spawn();
  auto a = fence("p", 0);
  ASSERT_TRUE(a) << describe(a.error());
  EXPECT_FALSE(a->view.has_snapshot);
  write(a->owner, 1, snapshot_of("p", 3));
  auto k = next_ack();
  ASSERT_TRUE(k.arrived);
  EXPECT_FALSE(k.err) << describe(k.err);
  EXPECT_EQ(k.tokens, std::vector<uint64_t>{1});
  auto b = fence("p", 0);
  ASSERT_TRUE(b);
  EXPECT_GT(b->owner.epoch(), a->owner.epoch());
  EXPECT_EQ(b->owner.slot(), a->owner.slot());
  ASSERT_TRUE(b->view.has_snapshot);
  EXPECT_EQ(b->view.snapshot.state().size(), 3u);
}

TEST_F(writer_test, a_replaced_owner_cannot_write) {
  spawn();
  auto a = fence("p", 0);
  auto b = fence("p", 0);
  ASSERT_TRUE(a && b);
  write(a->owner, 7, snapshot_of("p", 1)); // the zombie's commit
  auto k = next_ack();
  ASSERT_TRUE(k.arrived);
  EXPECT_TRUE(is(k.err, errc::fenced)) << describe(k.err);
  EXPECT_EQ(k.tokens, std::vector<uint64_t>{7});
  write(a->owner, 0, snapshot_of("p", 1)); // one that asked for no token
  k = next_ack();
  ASSERT_TRUE(k.arrived) << "a refused write must be told, token or not";
  EXPECT_TRUE(is(k.err, errc::fenced));
  EXPECT_TRUE(k.tokens.empty());
  write(b->owner, 8, snapshot_of("p", 2));
  k = next_ack();
  EXPECT_FALSE(k.err);
  auto c = fence("p", 0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->view.snapshot.state().size(), 2u) << "the zombie wrote";
}

TEST_F(writer_test, only_the_current_owner_may_fence_again) {
  spawn();
  auto a = fence("p", 0);
  auto b = fence("p", 0);
  ASSERT_TRUE(a && b);
  auto again = fence("p", a->owner.epoch());
  ASSERT_FALSE(again);
  EXPECT_TRUE(is(again.error(), errc::fenced)) << describe(again.error());
  auto renewed = fence("p", b->owner.epoch());
  ASSERT_TRUE(renewed);
  EXPECT_GT(renewed->owner.epoch(), b->owner.epoch());
  auto unknown = fence("q", 12345);
  EXPECT_FALSE(unknown);
}

TEST_F(writer_test, a_failed_commit_poisons_its_epoch_until_a_new_fence) {
  spawn();
  auto a = fence("p", 0);
  ASSERT_TRUE(a);
  st->fail_apply_after(0);
  write(a->owner, 0, snapshot_of("p", 1)); // no token, still told
  auto k = next_ack();
  ASSERT_TRUE(k.arrived) << "a failed write without token went untold";
  EXPECT_TRUE(is(k.err, errc::storage_failed)) << describe(k.err);
  write(a->owner, 2, snapshot_of("p", 2));
  k = next_ack();
  ASSERT_TRUE(k.arrived);
  EXPECT_TRUE(is(k.err, errc::storage_failed)) << describe(k.err);
  EXPECT_EQ(k.tokens, std::vector<uint64_t>{2});
  auto again = fence("p", a->owner.epoch());
  ASSERT_TRUE(again) << describe(again.error());
  EXPECT_FALSE(again->view.has_snapshot) << "nothing of the failure landed";
  write(again->owner, 3, snapshot_of("p", 3));
  k = next_ack();
  EXPECT_FALSE(k.err) << describe(k.err);
}

TEST_F(writer_test, a_grant_waits_for_the_paths_writes_in_the_batch) {
  writer_options opts;
  opts.max_latency = 300ms; // the write waits in the batch
  spawn(opts);
  auto a = fence("p", 0);
  ASSERT_TRUE(a);
  write(a->owner, 1, snapshot_of("p", 5));
  auto b = fence("p", 0); // arrives while the write is not committed
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->view.has_snapshot) << "the grant read the disk too early";
  EXPECT_EQ(b->view.snapshot.state().size(), 5u);
  auto k = next_ack();
  EXPECT_FALSE(k.err);
  EXPECT_EQ(k.tokens, std::vector<uint64_t>{1}); // before the grant
}

TEST_F(writer_test, a_path_is_forgotten_once_every_holder_released_it) {
  spawn();
  ASSERT_TRUE(fence("p", 0));
  ASSERT_TRUE(fence("p", 0)); // a second cell at the path
  ASSERT_TRUE(fence("q", 0));
  EXPECT_EQ(owners(), 2u);
  self->send(w, release_atom::value, std::string{"p"});
  EXPECT_EQ(owners(), 2u);
  self->send(w, release_atom::value, std::string{"p"});
  EXPECT_EQ(owners(), 1u);
  self->send(w, release_atom::value, std::string{"q"});
  self->send(w, release_atom::value, std::string{"nobody"});
  EXPECT_EQ(owners(), 0u);
}

TEST_F(writer_test, the_first_fence_of_a_path_takes_what_the_start_read) {
  std::map<std::string, recovered_agent> found;
  auto& x = found["p"];
  x.path = "p";
  x.has_snapshot = true; // not on disk: proves where the view came from
  x.snapshot.set_state("cached");
  found["gone"].path = "gone";
  spawn({}, std::move(found));
  auto a = fence("p", 0);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->view.snapshot.state(), "cached");
  auto b = fence("p", 0);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->view.has_snapshot) << "a later fence reads the disk";
  std::vector<std::string> orphans;
  self->request(w, caf::infinite, orphans_atom::value)
    .receive([&](std::vector<std::string>& xs) { orphans = xs; },
             [](caf::error&) {});
  EXPECT_EQ(orphans, std::vector<std::string>{"gone"});
  self->request(w, caf::infinite, orphans_atom::value)
    .receive([&](std::vector<std::string>& xs) { orphans = xs; },
             [](caf::error&) {});
  EXPECT_TRUE(orphans.empty()) << "the cache is dropped after the start";
}

// A dead letter of an envelope never accepted has no sender to tell, so a
// failed commit must not drop it: the writer tries it again.
TEST_F(writer_test, an_unfenced_dead_letter_survives_a_failed_commit) {
  spawn();
  st->fail_apply_after(0);
  records::DeadLetter dl;
  dl.set_format(store::format);
  dl.set_path("p");
  dl.set_reason("not_running");
  write_item item;
  item.muts.push_back(mutation{mutation::op::append_dead_letter,
                               db::dead_letters, {},
                               encode_record(dl)});
  caf::anon_send(w, write_atom::value, uint64_t{0},
                 owned_write{{}, std::move(item)});
  std::vector<records::DeadLetter> stored;
  ASSERT_TRUE(eventually([&] {
    return !st->dead_letters(stored) && stored.size() == 1;
  }, 5s)) << "the dead letter was lost";
  EXPECT_EQ(stored[0].reason(), "not_running");
}

} // namespace
