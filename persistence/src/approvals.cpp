// Approvals in the store (db::approvals): their ids, lookups and the pure
// state changes a decision or a timeout makes.

#include "vigil/persistence/approvals.hpp"

#include <openssl/evp.h>

#include <algorithm>

#include "store_impl.hpp"
#include "vigil/persistence/record.hpp"

namespace vigil {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

using detail::hex_value;

std::string when(uint64_t unix_ms) {
  return std::to_string(unix_ms) + " (Unix ms)";
}

/// "approved by alice at ...", for notes and errors.
std::string decided_text(const records::ApprovalRecord& rec) {
  bool known = true;
  auto st = state_of(rec, &known);
  std::string out = known ? to_string(st)
                          : "in state " + std::to_string(rec.state())
                              + " (unknown to this vigil)";
  if (!rec.decided_by().empty())
    out += " by " + rec.decided_by();
  if (rec.decided_unix_ms() != 0)
    out += " at " + when(rec.decided_unix_ms());
  if (!rec.reason().empty())
    out += " (" + rec.reason() + ")";
  return out;
}

} // namespace

const char* to_string(approval_state x) noexcept {
  switch (x) {
    case approval_state::pending: return "pending";
    case approval_state::approved: return "approved";
    case approval_state::rejected: return "rejected";
    case approval_state::expired: return "expired";
  }
  return "unknown";
}

const char* to_string(approval_kind x) noexcept {
  switch (x) {
    case approval_kind::tool_call: return "tool_call";
    case approval_kind::envelope: return "envelope";
  }
  return "unknown";
}

std::string hex_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += hex_digits[c >> 4];
    out += hex_digits[c & 0xf];
  }
  return out;
}

bool hex_decode(std::string_view hex, std::string& out) {
  out.clear();
  if (hex.size() % 2 != 0)
    return false;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    auto hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out += static_cast<char>((hi << 4) | lo);
  }
  return true;
}

std::string approval_id(std::string_view key) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // EVP_Digest fails only on an allocation failure inside OpenSSL.
  if (EVP_Digest(key.data(), key.size(), md, &len, EVP_sha256(), nullptr)
      != 1)
    throw std::bad_alloc();
  auto hex = hex_encode({reinterpret_cast<const char*>(md), len});
  hex.resize(approval_id_size);
  return hex;
}

approval_state state_of(const records::ApprovalRecord& rec,
                        bool* known) noexcept {
  auto s = rec.state();
  bool ok = s <= static_cast<uint32_t>(approval_state::expired);
  if (known != nullptr)
    *known = ok;
  return ok ? static_cast<approval_state>(s) : approval_state::pending;
}

std::string bound_request_text(std::string text, size_t max) {
  if (text.size() <= max)
    return text;
  auto total = text.size();
  auto note = [&](size_t kept) {
    return " ... (" + std::to_string(total - kept) + " of "
           + std::to_string(total) + " bytes cut)";
  };
  // Room for the note (its digits can only shrink as `kept` grows).
  auto room = note(0).size();
  size_t kept = max > room ? max - room : 0;
  // Not inside a UTF-8 sequence: back up over continuation bytes.
  while (kept > 0 && (static_cast<unsigned char>(text[kept]) & 0xc0) == 0x80)
    --kept;
  text.resize(kept);
  text += note(kept);
  return text;
}

namespace {

void fill(approval_entry& e, std::string key, std::string_view raw) {
  e.id = approval_id(key);
  e.key = std::move(key);
  e.rec.Clear();
  e.fault.clear();
  if (auto f = decode_record(raw, e.rec); f != record_fault::none) {
    e.fault = "approvals key \"" + printable_key(e.key)
              + "\": " + describe(f, raw, e.rec);
    e.rec.Clear();
  }
}

} // namespace

status list_approvals(store& st, std::vector<approval_entry>& out) {
  out.clear();
  std::vector<std::pair<std::string, std::string>> kvs;
  if (auto s = st.scan_prefix(db::approvals, "", kvs))
    return s;
  out.resize(kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i)
    fill(out[i], std::move(kvs[i].first), kvs[i].second);
  return {};
}

status get_approval(store& st, std::string_view key, approval_entry& out,
                    bool& found) {
  std::string raw;
  if (auto s = st.get(db::approvals, key, raw, found))
    return s;
  if (found)
    fill(out, std::string{key}, raw);
  return {};
}

status find_approval(store& st, std::string_view id, approval_entry& out) {
  auto& dir = st.options().dir;
  bool hex = !id.empty()
             && std::all_of(id.begin(), id.end(),
                            [](char c) { return hex_value(c) >= 0; });
  std::string key;
  if (!hex || (id.size() > approval_id_size && !hex_decode(id, key)))
    return {store_errc::invalid,
            "\"" + std::string{id} + "\" is not an approval id: an id is "
              + "up to " + std::to_string(approval_id_size)
              + " hex digits, as `vigil approvals list --data-dir " + dir
              + "` shows them (or the hex of its whole key)"};
  if (id.size() > approval_id_size) {
    // The whole key: what tells apart two approvals whose ids collide.
    bool found = false;
    if (auto s = get_approval(st, key, out, found))
      return s;
    if (!found)
      return {store_errc::not_found,
              "no approval with key " + std::string{id} + " in data dir "
                + dir};
    return {};
  }
  std::string want{id};
  std::transform(want.begin(), want.end(), want.begin(),
                 [](char c) { return static_cast<char>(std::tolower(c)); });
  std::vector<approval_entry> all;
  if (auto s = list_approvals(st, all))
    return s;
  std::vector<approval_entry*> hits;
  for (auto& e : all)
    if (e.id.compare(0, want.size(), want) == 0)
      hits.push_back(&e);
  if (hits.empty())
    return {store_errc::not_found,
            "no approval with id " + want + " in data dir " + dir};
  if (hits.size() > 1) {
    std::string ids;
    for (size_t i = 0; i < hits.size() && i < 5; ++i)
      ids += (i == 0 ? "" : ", ") + hits[i]->id;
    if (hits.size() > 5)
      ids += ", ...";
    return {store_errc::invalid,
            "id " + want + " is ambiguous in data dir " + dir + ": "
              + std::to_string(hits.size()) + " approvals start with it ("
              + ids + "); give more of its digits, or the hex of its key "
              + "(`vigil approvals list --json` shows it)"};
  }
  out = std::move(*hits.front());
  return {};
}

decision_effect decide(records::ApprovalRecord& rec,
                       const approval_decision& d, std::string& note) {
  auto verb = d.to == approval_state::approved ? "approval" : "rejection";
  bool known = true;
  if (state_of(rec, &known) != approval_state::pending || !known) {
    note = "ignored the " + std::string{verb} + " by " + d.by + ": it is "
           + decided_text(rec) + " already";
    return decision_effect::ignored;
  }
  if (rec.expires_unix_ms() != 0 && d.unix_ms >= rec.expires_unix_ms()) {
    rec.set_state(static_cast<uint32_t>(approval_state::expired));
    rec.set_decided_unix_ms(rec.expires_unix_ms());
    rec.clear_decided_by();
    rec.set_reason("its approval timeout passed at "
                   + when(rec.expires_unix_ms()) + ", before the "
                   + verb + " by " + d.by + " at " + when(d.unix_ms));
    note = "refused the " + std::string{verb} + " by " + d.by
           + ": it came after the approval expired; it is expired now";
    return decision_effect::late;
  }
  rec.set_state(static_cast<uint32_t>(d.to));
  rec.set_decided_unix_ms(d.unix_ms);
  rec.set_decided_by(d.by);
  rec.set_reason(d.reason);
  note = std::string{to_string(d.to)} + " by " + d.by;
  return decision_effect::applied;
}

bool expire_record(records::ApprovalRecord& rec, uint64_t now_ms,
                   std::string reason) {
  bool known = true;
  if (state_of(rec, &known) != approval_state::pending || !known)
    return false;
  rec.set_state(static_cast<uint32_t>(approval_state::expired));
  rec.set_decided_unix_ms(now_ms);
  rec.clear_decided_by();
  rec.set_reason(std::move(reason));
  return true;
}

} // namespace vigil
