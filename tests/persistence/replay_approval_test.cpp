// store::replay_dead_letters and the approval under a replayed effect's key
// (issue 17): a rejected or expired one is dropped, with a note, so that
// the effect's next dispatch asks a person again; an approved or pending
// one, a corrupt one, one in a state this vigil does not know, an
// envelope's approval, and the approval of an effect that is not replayed
// are kept.

#include "persistence/store_support.hpp"
#include "vigil/persistence/approvals.hpp"

using namespace vigil;
using namespace vigil::test;

namespace {

const std::string path = "root/j";

/// A journal agent's snapshot, so that replay takes its effects back.
mutation journal_agent(const std::string& p = path) {
  auto x = snapshot(p, 0);
  x.set_durability(2);
  x.set_next_seq(1);
  x.set_next_outbox(1);
  return put(db::snapshots, p, bytes(x));
}

std::string effect_key(uint64_t id, uint32_t index = 0,
                       const std::string& p = path) {
  return tool_result_key(p, 0, id, index);
}

/// A dead letter of an effect on "pay" under `key`.
mutation effect_letter(const std::string& key, const std::string& p = path) {
  records::DeadLetter x;
  x.set_format(store::format);
  x.set_path(p);
  x.mutable_env()->set_type("vigil.test.Order");
  x.mutable_env()->set_id(1);
  x.set_reason("effect on tool \"pay\" failed after 1 dispatch: "
               "approval_rejected");
  x.set_journal(true);
  auto& fx = *x.mutable_effect();
  fx.set_tool("pay");
  fx.set_request_type("vigil.test.Order");
  fx.set_key(key);
  fx.set_key_text("k");
  return mutation{mutation::op::append_dead_letter, db::dead_letters, {},
                  bytes(x)};
}

/// A dead letter of an envelope (no effect) of message `id`.
mutation envelope_letter(uint64_t id) {
  records::DeadLetter x;
  x.set_format(store::format);
  x.set_path(path);
  x.mutable_env()->set_type("vigil.test.Order");
  x.mutable_env()->set_id(id);
  x.set_reason("approval_rejected");
  x.set_journal(true);
  return mutation{mutation::op::append_dead_letter, db::dead_letters, {},
                  bytes(x)};
}

mutation approval(const std::string& key, approval_state st,
                  approval_kind kind = approval_kind::tool_call) {
  records::ApprovalRecord r;
  r.set_format(store::format);
  r.set_path(path);
  r.set_tool(kind == approval_kind::envelope ? "vigil.test.Order" : "pay");
  r.set_kind(static_cast<uint32_t>(kind));
  r.set_state(static_cast<uint32_t>(st));
  if (st != approval_state::pending) {
    r.set_decided_by("alice");
    r.set_reason("too costly");
    r.set_decided_unix_ms(1);
  }
  return put(db::approvals, key, bytes(r));
}

struct replayed {
  size_t n = 0;
  std::vector<std::string> problems;
  std::vector<std::string> notes;
};

replayed replay_all(store& s) {
  replayed out;
  EXPECT_TRUE(
    s.replay_dead_letters({}, true, out.problems, out.n, &out.notes).ok());
  return out;
}

bool has(store& s, db d, const std::string& key) {
  std::string raw;
  bool found = false;
  EXPECT_TRUE(s.get(d, key, raw, found).ok());
  return found;
}

std::string joined(const std::vector<std::string>& xs) {
  std::string out;
  for (auto& x : xs)
    out += x + "\n";
  return out;
}

} // namespace

TEST_F(store_test, a_replay_drops_a_rejected_approval_and_says_so) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto k = effect_key(1);
  ASSERT_TRUE(apply(*s, {journal_agent(), approval(k, approval_state::rejected),
                         effect_letter(k)})
                .ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.n, 1u);
  EXPECT_TRUE(r.problems.empty()) << joined(r.problems);
  EXPECT_FALSE(has(*s, db::approvals, k));
  ASSERT_EQ(r.notes.size(), 1u);
  auto& note = r.notes[0];
  EXPECT_NE(note.find("approval " + approval_id(k)), std::string::npos) << note;
  EXPECT_NE(note.find("was rejected by alice: too costly"), std::string::npos)
    << note;
  EXPECT_NE(note.find(path + "'s effect on pay"), std::string::npos) << note;
  EXPECT_EQ(count(*s, db::outbox), 1u);
  EXPECT_EQ(count(*s, db::dead_letters), 0u);
}

TEST_F(store_test, a_replay_drops_an_expired_approval) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto k = effect_key(2);
  ASSERT_TRUE(apply(*s, {journal_agent(), approval(k, approval_state::expired),
                         effect_letter(k)})
                .ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.n, 1u);
  EXPECT_FALSE(has(*s, db::approvals, k));
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("was expired"), std::string::npos) << r.notes[0];
}

TEST_F(store_test, a_replay_keeps_approved_and_pending_approvals) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto ka = effect_key(3);
  auto kp = effect_key(4);
  ASSERT_TRUE(apply(*s, {journal_agent(),
                         approval(ka, approval_state::approved),
                         approval(kp, approval_state::pending),
                         effect_letter(ka), effect_letter(kp)})
                .ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.n, 2u);
  EXPECT_TRUE(has(*s, db::approvals, ka));
  EXPECT_TRUE(has(*s, db::approvals, kp));
  EXPECT_TRUE(r.notes.empty()) << joined(r.notes);
  EXPECT_EQ(count(*s, db::outbox), 2u);
}

// Two dead letters of one effect key (it was replayed, rejected again, and
// so on): both go back, the approval goes once, one note.
TEST_F(store_test, a_replay_of_several_letters_under_one_key) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto k = effect_key(5);
  ASSERT_TRUE(apply(*s, {journal_agent(), approval(k, approval_state::rejected),
                         effect_letter(k), effect_letter(k), effect_letter(k)})
                .ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.n, 3u);
  EXPECT_TRUE(r.problems.empty()) << joined(r.problems);
  EXPECT_FALSE(has(*s, db::approvals, k));
  EXPECT_EQ(r.notes.size(), 1u) << joined(r.notes);
  EXPECT_EQ(count(*s, db::outbox), 3u);
  EXPECT_EQ(count(*s, db::dead_letters), 0u);
}

// A corrupt approval record, or one in a state this vigil does not know:
// kept (vigil approvals list shows it), and the replay goes through.
TEST_F(store_test, a_replay_keeps_corrupt_and_unknown_approvals) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto kc = effect_key(6);
  auto ku = effect_key(7);
  records::ApprovalRecord odd;
  odd.set_format(store::format);
  odd.set_path(path);
  odd.set_tool("pay");
  odd.set_state(9);
  ASSERT_TRUE(apply(*s, {journal_agent(), put(db::approvals, kc, garbage),
                         put(db::approvals, ku, bytes(odd)),
                         effect_letter(kc), effect_letter(ku)})
                .ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.n, 2u);
  EXPECT_TRUE(has(*s, db::approvals, kc));
  EXPECT_TRUE(has(*s, db::approvals, ku));
  EXPECT_TRUE(r.notes.empty()) << joined(r.notes);
}

// The envelope's own approval (kind envelope, call index 2^32 - 1) is not
// the effect's: kept, though both were rejected; so is the approval of an
// envelope dead letter replayed (no effect), and the approval of an effect
// whose dead letter is not chosen.
TEST_F(store_test, a_replay_touches_only_the_replayed_effects_approval) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto kfx = effect_key(8, 0);
  auto kenv = tool_result_key(path, 0, 8, approval_envelope_index);
  auto kother = effect_key(9, 0);
  auto kenv10 = tool_result_key(path, 0, 10, approval_envelope_index);
  ASSERT_TRUE(apply(*s, {journal_agent(),
                         approval(kfx, approval_state::rejected),
                         approval(kenv, approval_state::rejected,
                                  approval_kind::envelope),
                         approval(kother, approval_state::rejected),
                         approval(kenv10, approval_state::rejected,
                                  approval_kind::envelope),
                         effect_letter(kfx), effect_letter(kother),
                         envelope_letter(10)})
                .ok());
  std::vector<records::DeadLetter> dls;
  ASSERT_TRUE(s->dead_letters(dls).ok());
  ASSERT_EQ(dls.size(), 3u);
  // Replays the first (kfx) and the envelope; not kother's.
  std::vector<uint64_t> chosen{dls[0].seq(), dls[2].seq()};
  replayed r;
  ASSERT_TRUE(
    s->replay_dead_letters(chosen, false, r.problems, r.n, &r.notes).ok());
  EXPECT_EQ(r.n, 2u) << joined(r.problems);
  EXPECT_FALSE(has(*s, db::approvals, kfx));
  EXPECT_TRUE(has(*s, db::approvals, kenv));
  EXPECT_TRUE(has(*s, db::approvals, kother));
  EXPECT_TRUE(has(*s, db::approvals, kenv10));
  EXPECT_EQ(r.notes.size(), 1u) << joined(r.notes);
}

// An effect whose agent has no journal record here is not taken back: its
// rejected approval stays too (nothing would ask again).
TEST_F(store_test, a_skipped_effect_keeps_its_approval) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto k = effect_key(11, 0, "root/nobody");
  records::ApprovalRecord r0;
  ASSERT_TRUE(apply(*s, {approval(k, approval_state::rejected),
                         effect_letter(k, "root/nobody")})
                .ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.n, 0u);
  EXPECT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(has(*s, db::approvals, k));
  EXPECT_TRUE(r.notes.empty()) << joined(r.notes);
}
