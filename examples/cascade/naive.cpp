#include "naive.hpp"

#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace cascade {

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::steady_clock;

/// A call that failed after its retries ("records: status 503").
struct call_failed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The HTTP library's retries: up to 3 tries at once on a transport error
/// (a timeout included) or a 5xx. A 3xx or 4xx fails at once.
httplib::Result http_call(httplib::Client& c, const std::string& service,
                          const std::string& path, const std::string* body) {
  std::string last;
  for (int i = 0; i < 3; ++i) {
    auto res = body != nullptr ? c.Post(path, *body, "application/json")
                               : c.Get(path);
    if (res && res->status < 300)
      return res;
    if (res && res->status < 500)
      throw call_failed(service + ": status " + std::to_string(res->status));
    last = res ? "status " + std::to_string(res->status)
               : httplib::to_string(res.error());
  }
  throw call_failed(service + ": " + last);
}

/// The agent framework's tool wrapper: 3 tries of a call, 50 ms apart.
template <class Call>
httplib::Result tool(Call call) {
  for (int i = 0;; ++i) {
    try {
      return call();
    } catch (const call_failed&) {
      if (i == 2)
        throw;
      std::this_thread::sleep_for(50ms);
    }
  }
}

struct counters {
  std::atomic<int64_t> attempts_failed{0};
  std::atomic<int64_t> torn_reads{0};
  std::atomic<int64_t> increments{0};
  std::atomic<size_t> finished{0};
  std::atomic<size_t> drained{0}; ///< instances that found no task left
  std::mutex mtx;
  std::map<std::string, int64_t> errors;

  void failed(const std::string& what) {
    ++attempts_failed;
    std::lock_guard<std::mutex> g{mtx};
    ++errors[what];
  }
};

/// Counts the document in the shared config file by read-modify-write:
/// read it, parse it, increment, truncate it and write it back. A file
/// that does not parse is replaced by a fresh one, as such code does
/// ("the file is corrupt: start from the defaults"): the count so far is
/// lost with it.
void count_document(const std::string& path, const std::string& id,
                    const std::string& who, counters& c) {
  std::string text;
  {
    std::ifstream in{path};
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()
      || !j["documents_processed"].is_number_integer()) {
    // Empty: read between another instance's truncate and its write.
    // Otherwise two writes interleaved: the shorter over the longer, whose
    // tail is left behind.
    ++c.torn_reads;
    j = json{{"documents_processed", 0}};
  }
  j["documents_processed"] = j["documents_processed"].get<int64_t>() + 1;
  j["last_document"] = id;
  j["updated_by"] = who;
  std::ofstream out{path, std::ios::trunc};
  out << j.dump();
  out.close();
  if (!out)
    throw std::runtime_error("config: cannot write " + path);
  ++c.increments;
}

/// One instance: the next task, claim it, then up to 3 attempts of
/// {insert the record, send the webhook, count it in the config, mark the
/// task done}; an attempt that throws is retried from its start.
void instance(size_t n, const naive_options& o,
              const std::map<std::string, std::string>& addr, counters& c) {
  auto client = [](const std::string& at) {
    auto cli = std::make_unique<httplib::Client>("http://" + at);
    cli->set_keep_alive(true);
    cli->set_connection_timeout(200ms);
    cli->set_read_timeout(200ms);
    cli->set_write_timeout(200ms);
    return cli;
  };
  auto records = client(addr.at("records"));
  auto hooks = client(addr.at("hooks"));
  auto tasks = client(addr.at("tasks"));
  auto who = "w" + std::to_string(n);
  while (steady_clock::now() < o.deadline) {
    std::string id;
    try {
      auto next = tool([&] {
        return http_call(*tasks, "tasks", "/tasks/next", nullptr);
      });
      if (next->status == 204) {
        ++c.drained; // nothing pending
        break;
      }
      id = json::parse(next->body).at("id").get<std::string>();
      std::string none = "{}";
      tool([&] {
        return http_call(*tasks, "tasks", "/tasks/" + id + "/claim", &none);
      });
    } catch (const std::exception& e) {
      c.failed(e.what());
      continue;
    }
    auto record = json{{"id", id},
                       {"title", "Document " + id.substr(4)},
                       {"pages", 12}}
                    .dump();
    auto event = json{{"id", id}, {"kind", "document.processed"}}.dump();
    std::string none = "{}";
    bool ok = false;
    for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
      try {
        tool([&] {
          return http_call(*records, "records", "/records/" + id, &record);
        });
        tool([&] {
          return http_call(*hooks, "hooks", "/hooks/" + id, &event);
        });
        count_document(o.config, id, who, c);
        tool([&] {
          return http_call(*tasks, "tasks", "/tasks/" + id + "/done", &none);
        });
        ok = true;
      } catch (const std::exception& e) {
        c.failed(e.what());
      }
    }
    // Not ok: the task stays in progress, and nobody takes it again.
  }
  ++c.finished;
}

} // namespace

naive_figures run_naive(const naive_options& o, services& svc) {
  {
    std::ofstream out{o.config, std::ios::trunc};
    out << json{{"documents_processed", 0},
                {"last_document", ""},
                {"updated_by", ""}}
             .dump();
    out.close();
    if (!out)
      throw std::runtime_error("cannot write the config file " + o.config);
  }
  naive_figures st;
  counters c;
  auto addr = svc.addresses();
  auto t0 = steady_clock::now();
  std::vector<std::thread> ts;
  for (size_t n = 0; n < o.instances; ++n)
    ts.emplace_back([&, n] { instance(n, o, addr, c); });
  auto last = t0;
  while (c.finished < o.instances) {
    std::this_thread::sleep_for(50ms);
    if (steady_clock::now() - last >= 1s) {
      last = steady_clock::now();
      std::fprintf(stderr,
                   "cascade: naive %5.1fs  %lld/%zu documents done, %lld "
                   "records stored\n",
                   std::chrono::duration<double>(last - t0).count(),
                   static_cast<long long>(svc.tasks().done), o.documents,
                   static_cast<long long>(svc.records().stored));
    }
  }
  for (auto& t : ts)
    t.join();
  st.elapsed_s = std::chrono::duration<double>(steady_clock::now() - t0).count();
  st.finished = c.drained == o.instances;
  st.attempts_failed = c.attempts_failed;
  st.torn_reads = c.torn_reads;
  st.increments = c.increments;
  st.errors = c.errors;
  std::ifstream in{o.config};
  std::stringstream ss;
  ss << in.rdbuf();
  st.file_text = ss.str();
  st.file_parses = !json::parse(st.file_text, nullptr, false).is_discarded();
  // The count as a reader that stops after the first JSON value sees it.
  try {
    std::istringstream first{st.file_text};
    json j;
    first >> j;
    st.final_count = j.value("documents_processed", int64_t{0});
  } catch (const json::exception&) {
    st.final_count = 0;
  }
  return st;
}

} // namespace cascade
