// The account-creation saga's services: users, subscriptions and e-mail,
// each a real cpp-httplib server on 127.0.0.1 that keeps its own records
// (what it applied, per account and operation) and honors Idempotency-Key
// as Stripe does: a key seen before gets its first answer again, without
// applying anything. The e-mail service refuses a share of the accounts
// for good; every service fails now and then (README.md, "Account
// creation, a durable saga").
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "support/example_support.hpp"

namespace accounts {

struct fault_model {
  /// Accounts whose address the e-mail service refuses (422, for good).
  double email_refused = 0.2;
  /// Transient faults, on the first two requests about an account's
  /// operation at a service (a third always goes through, so that three
  /// attempts always reach a verdict): 503 before applying, and applied
  /// with the answer lost (503 after).
  double fail_before = 0.05;
  double lose_answer = 0.03;
  int latency_ms[2] = {10, 60};
};

/// What a service did about one account.
struct account_record {
  int created = 0; ///< creates (or sends) applied
  int undone = 0;  ///< deletes (or cancels) applied
  int refused = 0; ///< requests refused for good
};

/// One service's figures.
struct service_figures {
  int64_t requests = 0;
  int64_t repeats = 0; ///< answered from a key seen before
  int64_t faults = 0;  ///< transient faults injected
  std::map<std::string, account_record> accounts;
};

/// The three services, started on free ports by the constructor, stopped
/// by the destructor (they outlive every node process the demo kills).
class services {
public:
  services(uint64_t seed, fault_model f);
  ~services();
  services(const services&) = delete;
  services& operator=(const services&) = delete;

  /// "127.0.0.1:PORT" of users, subscriptions and email.
  std::map<std::string, std::string> addresses() const;
  /// A copy of one service's records.
  service_figures figures(const std::string& service) const;
  /// Whether the e-mail service refuses `account`'s address.
  bool email_refused(const std::string& account) const;

private:
  struct kept {
    int status = 0;
    std::string body;
  };
  void serve(const std::string& name, const char* undo);

  uint64_t seed_;
  fault_model f_;
  mutable std::mutex mtx_;
  std::map<std::string, service_figures> figures_;
  /// Per service: Idempotency-Key -> the first answer.
  std::map<std::string, std::map<std::string, kept>> keys_;
  /// Per service, account and operation: requests seen (the fault draws).
  std::map<std::string, int64_t> seen_;
  /// Last: stopped first, while what its handlers use still exists.
  examples::local_services servers_;
};

} // namespace accounts
