#include "watch.hpp"

#include <caf/all.hpp>

#include "vigil/actors/error.hpp"

namespace vigil::detail {

caf::error node_watch::start(caf::actor_system& sys,
                             std::shared_ptr<const runtime> rt,
                             const std::string& address,
                             std::function<std::string()> ready,
                             std::unique_ptr<node_watch>& out) {
  std::unique_ptr<node_watch> w{new node_watch};
  // Answers a number with itself: it runs only if the scheduler does.
  w->pinger_ = sys.spawn([]() -> caf::behavior {
    return {[](int32_t x) { return x; }};
  });
  auto pinger = w->pinger_;
  auto* system = &sys;
  metrics::health_checks checks;
  checks.live = [system, pinger]() -> std::string {
    caf::scoped_actor self{*system};
    std::string why;
    self->request(pinger, std::chrono::seconds{1}, int32_t{1})
      .receive([](int32_t) {},
               [&](caf::error& err) {
                 why = "the node's scheduler did not answer within 1 s ("
                       + system->render(err) + ")";
               });
    return why;
  };
  checks.ready = std::move(ready);
  std::string error;
  w->ep_ = metrics::endpoint::start(
    address,
    {std::make_shared<metrics::node_collector>(std::move(rt))},
    std::move(checks), error);
  if (!w->ep_) {
    caf::anon_send_exit(w->pinger_, caf::exit_reason::user_shutdown);
    return make_error(errc::start_failed, error);
  }
  out = std::move(w);
  return caf::none;
}

node_watch::~node_watch() {
  ep_.reset(); // no probe runs past here
  caf::anon_send_exit(pinger_, caf::exit_reason::user_shutdown);
}

} // namespace vigil::detail
