#include "agents.hpp"

#include <chrono>
#include <memory>
#include <stdexcept>

#include "invoices/invoices.pb.h"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/error.hpp"

namespace invoices {

namespace {

using namespace std::chrono_literals;
using vigil::context;
using vigil::describe;
using vigil::errc;
using vigil::is;

bool mode_on(const vigil::params& ps) {
  auto i = ps.find("mode");
  return i == ps.end() || i->second != "off";
}

std::string root_of(context& ctx) {
  auto& p = ctx.path();
  return p.substr(0, p.rfind('/'));
}

/// The suggestion score from which a PO match is taken without a person.
constexpr double confident = 0.9;

/// Takes each invoice through the four agents in turn and answers its
/// Outcome. Policies on, an invoice that needs a person (a scan no OCR
/// reads, an amount that differs from the lines, no PO match good enough)
/// goes to the review agent, whose envelope waits for approval, and is
/// answered MANUAL_REVIEW; off, it fails.
class desk : public vigil::agent<> {
public:
  explicit desk(const vigil::params& ps) : on_(mode_on(ps)) {
    // nop
  }

  static void define(vigil::handlers<desk>& h) {
    h.on<Invoice>(&desk::take);
  }

private:
  struct job {
    Invoice inv;
    OcrText text;
    Match match;
    vigil::deferred_reply reply;
  };
  using job_ptr = std::shared_ptr<job>;

  void take(context& ctx, const Invoice& inv) {
    auto j = std::make_shared<job>();
    j->inv = inv;
    j->reply = ctx.defer();
    auto root = root_of(ctx);
    OcrRequest r;
    r.set_id(inv.id());
    ctx.request<OcrText>(
      root + "/ocr", r, 60s,
      [this, &ctx, j](vigil::reply<OcrText> t) {
        j->text = std::move(t.value);
        if (j->text.unreadable())
          return to_review(ctx, j, "ocr: " + j->text.reason());
        validate(ctx, j);
      },
      [this, j](const caf::error& e) { fail(j, "ocr", e); });
  }

  void validate(context& ctx, const job_ptr& j) {
    ValidateRequest r;
    r.set_id(j->inv.id());
    r.set_amount_cents(j->text.amount_cents());
    r.set_lines_cents(j->inv.lines_cents());
    ctx.request<Validation>(
      root_of(ctx) + "/validate", r, 60s,
      [this, &ctx, j](vigil::reply<Validation> v) {
        if (!v.value.ok())
          return to_review(ctx, j, "validation: " + v.value.reason());
        match(ctx, j);
      },
      [this, j](const caf::error& e) { fail(j, "validation", e); });
  }

  void match(context& ctx, const job_ptr& j) {
    MatchRequest r;
    r.set_id(j->inv.id());
    r.set_po_ref(j->text.po_ref());
    ctx.request<Match>(
      root_of(ctx) + "/match", r, 60s,
      [this, &ctx, j](vigil::reply<Match> m) {
        j->match = std::move(m.value);
        if (j->match.needs_review())
          return to_review(ctx, j, "matching: " + j->match.reason());
        post(ctx, j);
      },
      [this, j](const caf::error& e) { fail(j, "matching", e); });
  }

  void post(context& ctx, const job_ptr& j) {
    EntryRequest r;
    r.set_id(j->inv.id());
    r.set_amount_cents(j->text.amount_cents());
    r.set_po(j->match.po());
    r.set_vendor(j->text.vendor());
    ctx.request<Entry>(
      root_of(ctx) + "/ledger", r, 60s,
      [j](vigil::reply<Entry>) {
        Outcome o;
        o.set_id(j->inv.id());
        o.set_status(Outcome::DONE);
        o.set_degraded(j->match.degraded());
        if (j->match.degraded())
          o.set_reason("PO match pending: " + j->match.reason());
        j->reply.deliver(o);
      },
      [this, j](const caf::error& e) { fail(j, "accounting", e); });
  }

  void to_review(context& ctx, const job_ptr& j, const std::string& why) {
    Outcome o;
    o.set_id(j->inv.id());
    o.set_reason(why);
    if (!on_) {
      o.set_status(Outcome::FAILED);
      return j->reply.deliver(o);
    }
    // What the person approves: the supplier's EDI total (not the amount
    // read, which may be the problem), and what OCR and matching found.
    Review r;
    r.set_id(j->inv.id());
    r.set_reason(why);
    r.set_vendor(j->text.vendor().empty() ? "(unread)" : j->text.vendor());
    r.set_amount_cents(j->inv.lines_cents());
    r.set_po(j->match.po().empty() ? "(unmatched)" : j->match.po());
    // Answered once the review agent has it (in its journal, with the
    // entry waiting for a person in its outbox).
    ctx.request<Review>(
      root_of(ctx) + "/review", r, 60s,
      [j, o](vigil::reply<Review>) mutable {
        o.set_status(Outcome::MANUAL_REVIEW);
        j->reply.deliver(o);
      },
      [this, j](const caf::error& e) { fail(j, "review", e); });
  }

  void fail(const job_ptr& j, const char* stage, const caf::error& e) {
    Outcome o;
    o.set_id(j->inv.id());
    o.set_status(Outcome::FAILED);
    o.set_reason(std::string{stage} + ": " + describe(e));
    j->reply.deliver(o);
  }

  bool on_;
};

/// OCR extraction: the `ocr` tool (critical, behind its breaker; its
/// fallback is the careful OCR). A scan that no OCR reads (a permanent
/// error) is answered `unreadable`, policies on.
class ocr_agent : public vigil::agent<> {
public:
  explicit ocr_agent(const vigil::params& ps) : on_(mode_on(ps)) {
    // nop
  }

  static void define(vigil::handlers<ocr_agent>& h) {
    h.on<OcrRequest>([](ocr_agent& self, context& ctx, const OcrRequest& r) {
      auto reply = ctx.defer();
      ctx.call_tool<OcrText>(
        "ocr", r, [reply](OcrText t) mutable { reply.deliver(t); },
        [reply, on = self.on_, id = r.id()](const caf::error& e) mutable {
          if (on && is(e, errc::tool_rejected)) {
            OcrText t;
            t.set_id(id);
            t.set_unreadable(true);
            t.set_reason(describe(e));
            return reply.deliver(t);
          }
          reply.fail(e);
        });
    });
  }

private:
  bool on_;
};

/// Amount validation: the `validate` tool.
class validator : public vigil::agent<> {
public:
  explicit validator(const vigil::params&) {
    // nop
  }

  static void define(vigil::handlers<validator>& h) {
    h.on<ValidateRequest>([](validator&, context& ctx,
                             const ValidateRequest& r) {
      auto reply = ctx.defer();
      ctx.call_tool<Validation>(
        "validate", r, [reply](Validation v) mutable { reply.deliver(v); },
        [reply](const caf::error& e) mutable { reply.fail(e); });
    });
  }
};

/// Purchase-order matching (non-critical): the exact lookup (`po_exact`);
/// policies on, a reference that does not match exactly (404) is looked up
/// among the suggestions (`po_suggest`), taken if one scores 0.9 or more
/// and sent to review otherwise; when the service cannot answer, the
/// tool's declared default does (`degraded`: the entry is posted with its
/// PO match pending).
class matcher : public vigil::agent<> {
public:
  explicit matcher(const vigil::params& ps) : on_(mode_on(ps)) {
    // nop
  }

  static void define(vigil::handlers<matcher>& h) {
    h.on<MatchRequest>(&matcher::take);
  }

private:
  void take(context& ctx, const MatchRequest& r) {
    auto reply = ctx.defer();
    ctx.call_tool<Match>(
      "po_exact", r,
      [reply](Match m, const vigil::tool_answer& a) mutable {
        m.set_degraded(a.by_default);
        reply.deliver(m);
      },
      [this, &ctx, reply, r](const caf::error& e) mutable {
        if (!on_ || !is(e, errc::tool_rejected))
          return reply.fail(e);
        suggest(ctx, r, reply);
      });
  }

  void suggest(context& ctx, const MatchRequest& r,
               vigil::deferred_reply reply) {
    ctx.call_tool<Match>(
      "po_suggest", r,
      [reply](Match m, const vigil::tool_answer& a) mutable {
        if (a.by_default) {
          m.set_needs_review(true);
          m.set_reason("no exact match, and no suggestions: "
                       + m.reason());
        } else if (m.score() < confident) {
          m.set_needs_review(true);
          m.set_reason("no exact match; best suggestion " + m.po()
                       + " scores " + std::to_string(m.score()));
        }
        reply.deliver(m);
      },
      [reply](const caf::error& e) mutable { reply.fail(e); });
  }

  bool on_;
};

/// Accounting entry generation: the `post_entry` tool, an idempotent
/// write: every attempt carries the call's Idempotency-Key, so a retry
/// after a lost answer finds the entry posted instead of posting again.
class ledger : public vigil::agent<> {
public:
  explicit ledger(const vigil::params&) {
    // nop
  }

  static void define(vigil::handlers<ledger>& h) {
    h.on<EntryRequest>([](ledger&, context& ctx, const EntryRequest& r) {
      auto reply = ctx.defer();
      ctx.call_tool<Entry>(
        "post_entry", r, [reply](Entry e) mutable { reply.deliver(e); },
        [reply](const caf::error& e) mutable { reply.fail(e); });
    });
  }
};

/// The manual-review queue. Each Review becomes the invoice's entry as an
/// effect of the `post_reviewed` tool, which needs a person's approval: it
/// is written to the outbox with this agent's commit (journal), waits,
/// each on its own, until someone runs `vigil approvals approve ID` (or
/// rejects it), and is then posted with its idempotency key. The state
/// keeps the ids queued; ReviewedQuery answers it.
class reviewer : public vigil::agent<Reviewed> {
public:
  explicit reviewer(const vigil::params&) {
    // nop
  }

  static void define(vigil::handlers<reviewer>& h) {
    h.on<Review>(&reviewer::queue);
    h.on<ReviewedQuery>([](reviewer& self, context&, const ReviewedQuery&) {
      return self.state();
    });
  }

private:
  Review queue(context& ctx, const Review& r) {
    EntryRequest e;
    e.set_id(r.id());
    e.set_amount_cents(r.amount_cents());
    e.set_po(r.po());
    e.set_vendor(r.vendor());
    e.set_review(r.reason()); // what the person approving it reads
    if (auto err = ctx.effect("post_reviewed", e))
      throw std::runtime_error("queueing invoice " + r.id()
                               + " for review: " + describe(err));
    state().add_queued(r.id());
    return r;
  }
};

} // namespace

void add_agents(vigil::registry& types) {
  types.add<desk>("desk");
  types.add<ocr_agent>("ocr_agent");
  types.add<validator>("validator");
  types.add<matcher>("matcher");
  types.add<ledger>("ledger");
  types.add<reviewer>("reviewer");
}

} // namespace invoices
